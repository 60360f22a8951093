package processor_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/internal/testlog"
	"github.com/samsa-go/samsa/processor"
)

// TestCanarySecretGoesNowhere sets a canary as the SASL password (and other secret
// properties: the OAUTHBEARER secret, the TLS key password, keystore password and inline
// private key; not ssl.certificate.pem, a public certificate, which librdkafka's conf
// debug prints as it is), runs a processor with debug logging (librdkafka's conf debug included),
// tracing, metrics and a dead-lettered record, and finds the canary in no log line, span,
// metric or dead-letter header.
func TestCanarySecretGoesNowhere(t *testing.T) {
	const canary = "CANARY-7f3a9c-SECRET"
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1}, embedded.Topic{Name: "dlq", Partitions: 1})
	produceInts(t, brokers, "in", 1, 5)
	produceRaw(t, brokers, "in", 0, []byte("poison-k"), []byte("poison"))

	logs := &testlog.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second, Overrides: map[string]any{
		// Plaintext listener: librdkafka keeps these without using them, which is enough
		// to see whether they leak.
		"sasl.username":                  "user",
		"sasl.password":                  canary,
		"sasl.oauthbearer.client.secret": canary,
		"ssl.key.password":               canary,
		"ssl.keystore.password":          canary,
		"ssl.key.pem":                    "-----BEGIN PRIVATE KEY-----\n" + canary + "\n-----END PRIVATE KEY-----\n",
		"debug":                          "conf,generic,cgrp",
	}}, Group: "canary", BatchWait: 5 * time.Millisecond, ErrorPolicy: processor.DeadLetter("dlq")},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](doubler),
		processor.WithLogger(logger), processor.WithTracerProvider(tp), processor.WithMeterProvider(mp))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool { return committed(t, brokers, "canary", "in", 1)[0] == 6 }))

	require.NotEmpty(t, logs.String(), "debug logging produced nothing: the test would prove nothing")
	assert.Contains(t, logs.String(), "librdkafka", "librdkafka's own logs are forwarded")
	assert.Contains(t, logs.String(), "sasl.password", "librdkafka's conf debug lists the property (redacted)")
	assert.NotContains(t, logs.String(), canary, "log lines")

	for _, s := range spans.Ended() {
		assert.NotContains(t, fmt.Sprint(s.Attributes(), s.Events(), s.Status()), canary, "span %q", s.Name())
	}
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	assert.NotContains(t, fmt.Sprintf("%+v", rm), canary, "metrics")

	dlq := consumeAll(t, brokers, "dlq", 1, 20*time.Second)
	require.Len(t, dlq, 1)
	for _, h := range dlq[0].Headers {
		assert.False(t, strings.Contains(string(h.Value), canary), "dead-letter header %s", h.Key)
	}
}
