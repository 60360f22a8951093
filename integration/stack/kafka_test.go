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

func TestKafkaSingleStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: starting a real Kafka broker takes seconds (needs java and mvn)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	k, err := StartKafka(ctx, KafkaOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { k.Close() })
	t.Logf("1-node cluster ready in %s at %s", time.Since(start), k.Bootstrap())
	pid := k.PID(1)
	require.NotZero(t, pid)
	require.NoError(t, k.KillBroker(1))
	require.Zero(t, k.PID(1))
	start = time.Now()
	require.NoError(t, k.StartBroker(ctx, 1))
	t.Logf("restarted in %s", time.Since(start))
	require.NoError(t, k.Close())
	require.NoError(t, k.Close())
}

// TestKafkaJarsCached: the jars are fetched once; a second call finds them and runs no
// Maven (the cache marker is not rewritten).
func TestKafkaJarsCached(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: fetching the Kafka jars needs Maven and Maven Central")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir, err := KafkaJars(ctx, DefaultKafkaVersion)
	require.NoError(t, err)
	marker := filepath.Join(dir, ".complete")
	st1, err := os.Stat(marker)
	require.NoError(t, err)
	dir2, err := KafkaJars(ctx, DefaultKafkaVersion)
	require.NoError(t, err)
	require.Equal(t, dir, dir2)
	st2, err := os.Stat(marker)
	require.NoError(t, err)
	require.Equal(t, st1.ModTime(), st2.ModTime(), "second KafkaJars call rewrote the cache")
	jars, err := filepath.Glob(filepath.Join(dir, "kafka_2.13-*.jar"))
	require.NoError(t, err)
	require.Len(t, jars, 1)
}

// TestKafkaProxied: a proxied broker advertises its proxy, so a client bootstrapped at
// ProxiedBootstrap reaches it only through the proxy: a black hole there cuts the client
// off while the direct listener still answers, and healing restores it.
func TestKafkaProxied(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: starting a real Kafka broker takes seconds (needs java and mvn)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k, err := StartKafka(ctx, KafkaOptions{Proxied: true, HeapMB: 256})
	require.NoError(t, err)
	t.Cleanup(func() { k.Close() })
	px, err := k.Proxy(1)
	require.NoError(t, err)
	require.Equal(t, px.Addr(), k.ProxiedBootstrap())
	_, err = k.Proxy(2)
	require.Error(t, err)

	metadata := func(bootstrap string) (*kafka.Metadata, error) {
		ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 2000})
		require.NoError(t, err)
		defer ac.Close()
		return ac.GetMetadata(nil, true, 2000)
	}
	md, err := metadata(k.ProxiedBootstrap())
	require.NoError(t, err)
	require.Len(t, md.Brokers, 1)
	require.Equal(t, px.Addr(), fmt.Sprintf("%s:%d", md.Brokers[0].Host, md.Brokers[0].Port), "the EXTERNAL listener advertises the proxy")
	md, err = metadata(k.Bootstrap())
	require.NoError(t, err)
	require.NotEqual(t, px.Addr(), fmt.Sprintf("%s:%d", md.Brokers[0].Host, md.Brokers[0].Port), "the direct listener advertises itself")

	px.Blackhole(faultproxy.Both)
	_, err = metadata(k.ProxiedBootstrap())
	require.Error(t, err, "a black-holed client gets no metadata")
	_, err = metadata(k.Bootstrap())
	require.NoError(t, err, "the direct listener is not affected")
	px.Heal()
	_, err = metadata(k.ProxiedBootstrap())
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
	if testing.Short() {
		t.Skip("short mode: starting a real Kafka broker takes seconds (needs java and mvn)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k, err := StartKafka(ctx, KafkaOptions{TLS: true, MutualTLS: true, SASL: true, HeapMB: 256})
	require.NoError(t, err)
	t.Cleanup(func() { k.Close() })
	require.NotEmpty(t, k.TLSBootstrap())
	require.NotEqual(t, k.Bootstrap(), k.TLSBootstrap())
	require.Equal(t, "SASL_SSL", k.SASLProtocol())
	require.NoError(t, k.AddSCRAMUser(ctx, "tls-user", "tls-pass"))

	metadata := func(bootstrap string, props map[string]any) error {
		cm := kafka.ConfigMap{"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 3000}
		for key, v := range props {
			cm[key] = v
		}
		ac, err := kafka.NewAdminClient(&cm)
		require.NoError(t, err)
		defer ac.Close()
		_, err = ac.GetMetadata(nil, true, 5000)
		return err
	}
	props := k.TLSClientProps()
	require.Equal(t, "SSL", props["security.protocol"])
	require.Equal(t, k.TLSFiles().CAFile, props["ssl.ca.location"])
	require.NoError(t, metadata(k.TLSBootstrap(), props), "TLS with the CA and the client certificate")

	noCert := k.TLSClientProps()
	delete(noCert, "ssl.certificate.location")
	delete(noCert, "ssl.key.location")
	require.Error(t, metadata(k.TLSBootstrap(), noCert), "mutual TLS refuses a client without a certificate")
	noCA := k.TLSClientProps()
	delete(noCA, "ssl.ca.location")
	require.Error(t, metadata(k.TLSBootstrap(), noCA), "a client that does not trust the test CA refuses the broker")
	require.Error(t, metadata(k.TLSBootstrap(), nil), "a plaintext client gets nothing from the TLS listener")

	sasl := map[string]any{"security.protocol": k.SASLProtocol(), "ssl.ca.location": k.TLSFiles().CAFile,
		"sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "tls-user", "sasl.password": "tls-pass"}
	require.NoError(t, metadata(k.SASLBootstrap(), sasl), "SCRAM over TLS")
}
