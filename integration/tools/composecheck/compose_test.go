package composecheck

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const repo = "../../.."

func load(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(repo, "docker-compose.yml")},
		cli.WithWorkingDirectory(repo), cli.WithName("samsa"))
	require.NoError(t, err)
	p, err := opts.LoadProject(context.Background())
	require.NoError(t, err, "docker-compose.yml does not load with compose-go")
	return p
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, path))
	require.NoError(t, err)
	return string(b)
}

func published(s types.ServiceConfig) map[uint32]string {
	out := map[uint32]string{}
	for _, p := range s.Ports {
		out[p.Target] = p.Published
	}
	return out
}

func TestComposeMatchesTheEnvironmentContract(t *testing.T) {
	svc := load(t).Services
	for _, name := range []string{"kafka", "redis", "jaeger", "prometheus", "grafana", "schema-registry"} {
		require.Contains(t, svc, name, "service %s", name)
	}

	// Kafka: the launcher's version, reachable where the README says (KAFKA_BROKERS).
	version := regexp.MustCompile(`DefaultKafkaVersion = "([^"]+)"`).FindStringSubmatch(read(t, "integration/stack/kafka.go"))
	require.Len(t, version, 2)
	assert.Equal(t, "apache/kafka:"+version[1], svc["kafka"].Image, "compose runs the Kafka release the tests run")
	assert.Contains(t, strings.Split(*svc["kafka"].Environment["KAFKA_ADVERTISED_LISTENERS"], ","), "PLAINTEXT://localhost:9092")

	// Jaeger: the version the tests build, OTLP and the query API where the README says.
	jv := regexp.MustCompile(`jaegertracing/jaeger (v[0-9.]+)`).FindStringSubmatch(read(t, "integration/tools/jaeger/go.mod"))
	require.Len(t, jv, 2)
	assert.Equal(t, "jaegertracing/all-in-one:"+strings.TrimPrefix(jv[1], "v"), svc["jaeger"].Image)
	for _, port := range []uint32{16686, 4317, 4318} {
		assert.NotEmpty(t, published(svc["jaeger"])[port], "jaeger port %d published", port)
	}
	// Schema registry: Confluent's, on 8081 (SCHEMA_REGISTRY_URL), storing its schemas in
	// the compose Kafka through a listener that Kafka advertises to containers.
	assert.True(t, strings.HasPrefix(svc["schema-registry"].Image, "confluentinc/cp-schema-registry:"), svc["schema-registry"].Image)
	store := *svc["schema-registry"].Environment["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"]
	hostPort := strings.TrimPrefix(store, "PLAINTEXT://")
	assert.Contains(t, *svc["kafka"].Environment["KAFKA_ADVERTISED_LISTENERS"], "://"+hostPort, "the registry's bootstrap is a listener Kafka advertises")
	assert.Contains(t, *svc["kafka"].Environment["KAFKA_LISTENERS"], ":"+strings.SplitN(hostPort, ":", 2)[1])
	assert.Contains(t, svc["schema-registry"].DependsOn, "kafka")
	assert.Equal(t, "1", *svc["schema-registry"].Environment["SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR"], "one Kafka node")

	for name, port := range map[string]uint32{"kafka": 9092, "schema-registry": 8081, "redis": 6379, "prometheus": 9090,
		"grafana": 3000} {
		assert.Equal(t, fmt.Sprint(port), published(svc[name])[port], "%s publishes port %d", name, port)
	}

	// The README's exports point at exactly these ports.
	readme := read(t, "README.md")
	for _, want := range []string{"KAFKA_BROKERS=localhost:9092", "REDIS_ADDR=localhost:6379",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318", "JAEGER_QUERY_URL=http://localhost:16686", "METRICS_ADDR=:9464",
		"SCHEMA_REGISTRY_URL=http://localhost:8081"} {
		assert.Contains(t, readme, want, "README.md does not say %q", want)
	}
	// The variables the compose header documents are the ones the tests read.
	env := read(t, "integration/stack/env.go")
	for _, v := range []string{"KAFKA_BROKERS", "REDIS_ADDR", "OTEL_EXPORTER_OTLP_ENDPOINT", "JAEGER_QUERY_URL", "SCHEMA_REGISTRY_URL"} {
		assert.Contains(t, env, `"`+v+`"`)
	}

	// Every mounted file exists in the repository.
	for name, s := range svc {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			_, err := os.Stat(v.Source)
			assert.NoError(t, err, "service %s mounts %s", name, v.Source)
		}
	}
	// Prometheus scrapes the examples' METRICS_ADDR port.
	assert.Contains(t, read(t, "integration/compose/prometheus.yml"), "host.docker.internal:9464")
	// The dashboard queries metrics the library exports.
	dash := read(t, "integration/compose/grafana/samsa.json")
	for _, m := range []string{"samsa_records_consumed_total", "samsa_consumer_lag", "samsa_batch_commit_latency_seconds_bucket",
		"samsa_records_dead_lettered_total", "samsa_distributed_processes_running"} {
		assert.Contains(t, dash, m)
	}
}
