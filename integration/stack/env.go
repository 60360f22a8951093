// Package stack starts the real components the integration tests run against: Apache
// Kafka in KRaft mode (1 or 3 nodes) from the release jars on Maven Central, Debian's
// redis-server, Jaeger all-in-one built from the Go module proxy, and a Confluent-API schema
// registry (rivven-schema) built with cargo. Everything listens
// on 127.0.0.1 on free ports, runs as a child process stopped by PID, and dies with the
// test binary.
//
// # The environment contract
//
// Tests and examples read the same variables:
//
//	KAFKA_BROKERS                 bootstrap servers of a running Kafka
//	REDIS_ADDR                    host:port of a running Redis
//	OTEL_EXPORTER_OTLP_ENDPOINT   OTLP/HTTP endpoint (http://host:4318) of a running collector
//	JAEGER_QUERY_URL              Jaeger's query API (http://host:16686)
//	SCHEMA_REGISTRY_URL           a Confluent-API schema registry (http://host:8081)
//
// When a variable is unset, the helpers here start the real component once per test
// binary and stop it when the tests end ([RunTests]). `go run ./integration/cmd/stack run
// -- CMD` starts all of them once, exports the variables and runs CMD, which is how `make
// test` shares one stack between all test packages.
package stack

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variable names of the contract.
const (
	EnvKafkaBrokers = "KAFKA_BROKERS"
	EnvRedisAddr    = "REDIS_ADDR"
	EnvOTLPEndpoint = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvJaegerQuery  = "JAEGER_QUERY_URL"

	EnvSchemaRegistryURL = "SCHEMA_REGISTRY_URL"
)

// shared holds the components the helpers below started for this test binary, by the
// variable they stand in for.
var shared struct {
	mu      sync.Mutex
	started map[string]interface{ Close() error }
}

// RunTests runs m and then stops whatever the shared helpers started. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(stack.RunTests(m)) }
func RunTests(m *testing.M) int {
	code := m.Run()
	CloseShared()
	return code
}

// CloseShared stops the components started by KafkaBrokers, RedisAddr, JaegerEndpoints
// and SchemaRegistryURL.
func CloseShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	for _, c := range shared.started {
		c.Close()
	}
	shared.started = nil
}

// startShared returns the component shared under key, starting it first (within timeout)
// if this binary has not; it fails tb when it cannot.
func startShared[T interface{ Close() error }](tb testing.TB, key, what string, timeout time.Duration,
	start func(context.Context) (T, error)) T {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if c, ok := shared.started[key]; ok {
		return c.(T)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := start(ctx)
	if err != nil {
		tb.Fatalf("start the test %s (or set %s): %v", what, key, err)
	}
	if shared.started == nil {
		shared.started = map[string]interface{ Close() error }{}
	}
	shared.started[key] = c
	return c
}

// KafkaBrokers returns $KAFKA_BROKERS, or starts a single-node real Kafka shared by the
// tests of this binary. It fails tb when the broker cannot be started. Tests that kill
// brokers must start their own cluster with StartKafka instead.
func KafkaBrokers(tb testing.TB) string {
	tb.Helper()
	if v := os.Getenv(EnvKafkaBrokers); v != "" {
		return v
	}
	return startShared(tb, EnvKafkaBrokers, "Kafka broker", 5*time.Minute, func(ctx context.Context) (*Kafka, error) {
		return StartKafka(ctx, KafkaOptions{})
	}).Bootstrap()
}

// RedisAddr returns $REDIS_ADDR, or starts a redis-server shared by this test binary.
func RedisAddr(tb testing.TB) string {
	tb.Helper()
	if v := os.Getenv(EnvRedisAddr); v != "" {
		return v
	}
	return startShared(tb, EnvRedisAddr, "Redis", time.Minute, func(ctx context.Context) (*Redis, error) {
		return StartRedis(ctx, RedisOptions{})
	}).Addr()
}

// JaegerEndpoints returns the OTLP/HTTP endpoint (host:port, for otlptracehttp.WithEndpoint)
// and the query URL of a running Jaeger: from $OTEL_EXPORTER_OTLP_ENDPOINT and
// $JAEGER_QUERY_URL when both are set, else a Jaeger shared by this test binary.
func JaegerEndpoints(tb testing.TB) (otlpHostPort, queryURL string) {
	tb.Helper()
	otlp, query := os.Getenv(EnvOTLPEndpoint), os.Getenv(EnvJaegerQuery)
	if otlp != "" && query != "" {
		return stripScheme(otlp), query
	}
	j := startShared(tb, EnvOTLPEndpoint+" and "+EnvJaegerQuery, "Jaeger", 15*time.Minute,
		func(ctx context.Context) (*Jaeger, error) { return StartJaeger(ctx, JaegerOptions{}) })
	return j.OTLPHTTPEndpoint(), j.QueryURL()
}

// SchemaRegistryURL returns $SCHEMA_REGISTRY_URL, or starts a schema registry shared by
// this test binary (building it first if needed; see RegistryBinary). Tests that stop
// the registry must start their own with StartRegistry.
func SchemaRegistryURL(tb testing.TB) string {
	tb.Helper()
	if v := os.Getenv(EnvSchemaRegistryURL); v != "" {
		return v
	}
	return startShared(tb, EnvSchemaRegistryURL, "schema registry", registryBuildTimeout+time.Minute,
		func(ctx context.Context) (*Registry, error) { return StartRegistry(ctx, RegistryOptions{}) }).URL()
}

func stripScheme(endpoint string) string {
	endpoint = strings.TrimPrefix(endpoint, "http://")
	endpoint = strings.TrimPrefix(endpoint, "https://")
	return strings.TrimSuffix(endpoint, "/")
}

// UniqueName returns prefix-<random suffix>, for topics and groups that must not collide
// between tests sharing a broker.
func UniqueName(prefix string) string {
	return fmt.Sprintf("%s-%s", prefix, newClusterID()[:10])
}
