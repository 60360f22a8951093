package stack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/faultproxy"
)

// needs skips t in -short mode: it starts or builds what (seconds to minutes).
func needs(t *testing.T, what string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs " + what)
	}
}

const needsKafka = "a real Kafka broker (java and mvn), which takes seconds to start"

// startKafka starts a cluster for t, closed when t ends, within a 3-minute ctx.
func startKafka(t *testing.T, opts KafkaOptions) (context.Context, *Kafka) {
	needs(t, needsKafka)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	start := time.Now()
	k, err := StartKafka(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { k.Close() })
	t.Logf("%d-node cluster ready in %s at %s", len(k.NodeIDs()), time.Since(start), k.Bootstrap())
	return ctx, k
}

// metadata asks bootstrap (with the client properties props) for the cluster's metadata.
func metadata(t *testing.T, bootstrap string, props map[string]any) (*kafka.Metadata, error) {
	cm := kafka.ConfigMap{"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 3000}
	for key, v := range props {
		cm[key] = v
	}
	ac, err := kafka.NewAdminClient(&cm)
	require.NoError(t, err)
	defer ac.Close()
	return ac.GetMetadata(nil, true, 5000)
}

func TestKafkaSingleStartStop(t *testing.T) {
	ctx, k := startKafka(t, KafkaOptions{})
	require.NotZero(t, k.PID(1))
	require.NoError(t, k.KillBroker(1))
	require.Zero(t, k.PID(1))
	start := time.Now()
	require.NoError(t, k.StartBroker(ctx, 1))
	t.Logf("restarted in %s", time.Since(start))
	require.NoError(t, k.Close())
	require.NoError(t, k.Close())
}

// requireBuiltOnce checks that get fetches or builds once (within timeout): a second call
// returns the same path and leaves file(path) as it was. It returns the path.
func requireBuiltOnce(t *testing.T, timeout time.Duration, get func(context.Context) (string, error),
	file func(string) string) string {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	path, err := get(ctx)
	require.NoError(t, err)
	st1, err := os.Stat(file(path))
	require.NoError(t, err)
	path2, err := get(ctx)
	require.NoError(t, err)
	require.Equal(t, path, path2)
	st2, err := os.Stat(file(path2))
	require.NoError(t, err)
	require.Equal(t, st1.ModTime(), st2.ModTime(), "the second call rebuilt %s", path)
	return path
}

// requireExecutable checks that bin is an executable file.
func requireExecutable(t *testing.T, bin string) {
	st, err := os.Stat(bin)
	require.NoError(t, err)
	require.NotZero(t, st.Mode()&0o111, "%s is not executable", bin)
}

// TestKafkaJarsCached: the jars are fetched once (`make kafka-jars` runs this test to do it
// ahead of time); a second call finds them and runs no Maven (the marker is not rewritten).
func TestKafkaJarsCached(t *testing.T) {
	needs(t, "Maven and Maven Central to fetch the Kafka jars")
	get := func(ctx context.Context) (string, error) { return KafkaJars(ctx, DefaultKafkaVersion) }
	dir := requireBuiltOnce(t, 10*time.Minute, get, func(dir string) string { return filepath.Join(dir, ".complete") })
	jars, err := filepath.Glob(filepath.Join(dir, "kafka_2.13-*.jar"))
	require.NoError(t, err)
	require.Len(t, jars, 1)
}

// TestKafkaProxied: a proxied broker advertises its proxy, so a client bootstrapped at
// ProxiedBootstrap reaches it only through the proxy: a black hole there cuts the client
// off while the direct listener still answers, and healing restores it.
func TestKafkaProxied(t *testing.T) {
	_, k := startKafka(t, KafkaOptions{Proxied: true, HeapMB: 256})
	px, err := k.Proxy(1)
	require.NoError(t, err)
	require.Equal(t, px.Addr(), k.ProxiedBootstrap())
	_, err = k.Proxy(2)
	require.Error(t, err)

	advertised := func(md *kafka.Metadata) string { return fmt.Sprintf("%s:%d", md.Brokers[0].Host, md.Brokers[0].Port) }
	md, err := metadata(t, k.ProxiedBootstrap(), nil)
	require.NoError(t, err)
	require.Len(t, md.Brokers, 1)
	require.Equal(t, px.Addr(), advertised(md), "the EXTERNAL listener advertises the proxy")
	md, err = metadata(t, k.Bootstrap(), nil)
	require.NoError(t, err)
	require.NotEqual(t, px.Addr(), advertised(md), "the direct listener advertises itself")

	px.Blackhole(faultproxy.Both)
	_, err = metadata(t, k.ProxiedBootstrap(), nil)
	require.Error(t, err, "a black-holed client gets no metadata")
	_, err = metadata(t, k.Bootstrap(), nil)
	require.NoError(t, err, "the direct listener is not affected")
	px.Heal()
	_, err = metadata(t, k.ProxiedBootstrap(), nil)
	require.NoError(t, err)
}

// TestKafkaNotProxied: Proxy says how to get one.
func TestKafkaNotProxied(t *testing.T) {
	_, err := (&Kafka{}).Proxy(1)
	require.ErrorContains(t, err, "KafkaOptions.Proxied")
	require.Empty(t, (&Kafka{}).ProxiedBootstrap())
}

// TestKafkaTLS: a cluster with TLS (mutual) and SASL answers metadata on its TLS
// listener to a client that trusts the generated CA and shows the client certificate,
// refuses one without the certificate or without the CA, and serves SCRAM over TLS
// (SASL_SSL) on SECURE.
func TestKafkaTLS(t *testing.T) {
	ctx, k := startKafka(t, KafkaOptions{TLS: true, MutualTLS: true, SASL: true, HeapMB: 256})
	require.NotEmpty(t, k.TLSBootstrap())
	require.NotEqual(t, k.Bootstrap(), k.TLSBootstrap())
	require.Equal(t, "SASL_SSL", k.SASLProtocol())
	require.NoError(t, k.AddSCRAMUser(ctx, "tls-user", "tls-pass"))

	props := k.TLSClientProps()
	require.Equal(t, "SSL", props["security.protocol"])
	require.Equal(t, k.TLSFiles().CAFile, props["ssl.ca.location"])
	without := func(keys ...string) map[string]any {
		p := k.TLSClientProps()
		for _, key := range keys {
			delete(p, key)
		}
		return p
	}
	for _, c := range []struct {
		why       string
		bootstrap string
		props     map[string]any
		ok        bool
	}{
		{"TLS with the CA and the client certificate", k.TLSBootstrap(), props, true},
		{"mutual TLS refuses a client without a certificate", k.TLSBootstrap(),
			without("ssl.certificate.location", "ssl.key.location"), false},
		{"a client that does not trust the test CA refuses the broker", k.TLSBootstrap(), without("ssl.ca.location"), false},
		{"a plaintext client gets nothing from the TLS listener", k.TLSBootstrap(), nil, false},
		{"SCRAM over TLS", k.SASLBootstrap(), map[string]any{"security.protocol": k.SASLProtocol(),
			"ssl.ca.location": k.TLSFiles().CAFile, "sasl.mechanisms": "SCRAM-SHA-256",
			"sasl.username": "tls-user", "sasl.password": "tls-pass"}, true},
	} {
		_, err := metadata(t, c.bootstrap, c.props)
		require.Equal(t, c.ok, err == nil, "%s: %v", c.why, err)
	}
}
