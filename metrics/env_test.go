package metrics_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/metrics"
)

func TestFromEnvServesMetrics(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("METRICS_ADDR", "127.0.0.1:0")
	env, err := metrics.FromEnv(t.Context(), "envtest", nil)
	require.NoError(t, err)
	defer env.Close()
	require.NotEmpty(t, env.MetricsAddr)
	c, err := env.Meter.Meter("t").Int64Counter("samsa.envtest.hits")
	require.NoError(t, err)
	c.Add(t.Context(), 3)
	resp, err := http.Get("http://" + env.MetricsAddr + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Regexp(t, `samsa_envtest_hits_total\{[^}]*\} 3`, string(body))
}

func TestFromEnvBadAddressNamesIt(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("METRICS_ADDR", "256.0.0.1:http-nope")
	_, err := metrics.FromEnv(t.Context(), "envtest", nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "METRICS_ADDR 256.0.0.1:http-nope")
}

func TestFromEnvOffIsNoop(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("METRICS_ADDR", "")
	env, err := metrics.FromEnv(t.Context(), "envtest", nil)
	require.NoError(t, err)
	assert.Empty(t, env.MetricsAddr)
	env.Close()
}
