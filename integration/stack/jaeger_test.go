package stack

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

func TestJaegerLauncher(t *testing.T) {
	needs(t, "the Jaeger build")
	// The first run builds Jaeger (about 4 minutes on 2 cores); later runs use the cache.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	start := time.Now()
	j, err := StartJaeger(ctx, JaegerOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, j.Close()) })
	t.Logf("Jaeger ready in %s: OTLP/HTTP %s, query %s", time.Since(start).Round(time.Millisecond), j.OTLPHTTPEndpoint(), j.QueryURL())
	jaegerRoundTrip(ctx, t, j.OTLPHTTPEndpoint(), j.JaegerQuery)
	requireClosed(t, j.Close, j.PID())
}

// TestJaegerBinaryCached: Jaeger is built once (`make jaeger` runs this test to do it ahead
// of time); a second call finds the binary and does not rebuild it.
func TestJaegerBinaryCached(t *testing.T) {
	needs(t, "the Go module proxy and minutes to build Jaeger")
	requireExecutable(t, requireBuiltOnce(t, 15*time.Minute, JaegerBinary, func(bin string) string { return bin }))
}

// TestJaegerEnv checks the env contract: OTEL_EXPORTER_OTLP_ENDPOINT and JAEGER_QUERY_URL,
// when set, point at a running Jaeger.
func TestJaegerEnv(t *testing.T) {
	otlp, query := os.Getenv(EnvOTLPEndpoint), os.Getenv(EnvJaegerQuery)
	if otlp == "" || query == "" {
		t.Skipf("%s and %s not both set: no external Jaeger to check", EnvOTLPEndpoint, EnvJaegerQuery)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	jaegerRoundTrip(ctx, t, stripScheme(otlp), JaegerQuery{URL: query})
}

// jaegerRoundTrip exports a parent and a child span over OTLP/HTTP to otlpHostPort and
// reads them back through q.
func jaegerRoundTrip(ctx context.Context, t *testing.T, otlpHostPort string, q JaegerQuery) {
	t.Helper()
	service := fmt.Sprintf("samsa-stack-test-%08x", rand.Uint32()) // unique: Jaeger may be shared
	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpoint(otlpHostPort),
		otlptracehttp.WithURLPath("/v1/traces"), // in case OTEL_EXPORTER_OTLP_TRACES_ENDPOINT sets another
		otlptracehttp.WithInsecure(),
	)
	require.NoError(t, err)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSyncer(exp), // export on End: no batching delay
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service))),
	)
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	tr := tp.Tracer("samsa/integration/stack")
	pctx, parent := tr.Start(ctx, "parent")
	_, child := tr.Start(pctx, "child", trace.WithAttributes(attribute.String("samsa.test", "value-1")))
	child.End()
	parent.End()
	require.NoError(t, tp.ForceFlush(ctx))
	require.NoError(t, tp.Shutdown(ctx))

	traceID := parent.SpanContext().TraceID().String()
	var got JaegerTrace
	require.Eventually(t, func() bool {
		traces, err := q.Traces(ctx, service)
		if err != nil {
			t.Logf("query traces: %v", err)
			return false
		}
		for _, tr := range traces {
			if tr.TraceID == traceID && len(tr.Spans) == 2 {
				got = tr
				return true
			}
		}
		return false
	}, 30*time.Second, 200*time.Millisecond, "trace %s of service %s not found in Jaeger at %s", traceID, service, q.URL)

	p, ok := got.SpanByOperation("parent")
	require.True(t, ok, "parent span")
	c, ok := got.SpanByOperation("child")
	require.True(t, ok, "child span")
	assert.Equal(t, parent.SpanContext().SpanID().String(), p.SpanID)
	assert.Equal(t, child.SpanContext().SpanID().String(), c.SpanID)
	assert.Empty(t, p.References, "parent is a root span")
	require.Len(t, c.References, 1)
	assert.Equal(t, JaegerRef{RefType: "CHILD_OF", TraceID: traceID, SpanID: p.SpanID}, c.References[0])
	v, ok := c.Tag("samsa.test")
	assert.True(t, ok, "child tag samsa.test")
	assert.Equal(t, "value-1", v)
	assert.Equal(t, service, got.Processes[c.ProcessID].ServiceName)

	byID, err := q.Trace(ctx, traceID)
	require.NoError(t, err)
	assert.Len(t, byID.Spans, 2)
	_, err = q.Trace(ctx, "00000000000000000000000000000001")
	assert.ErrorIs(t, err, ErrJaegerTraceNotFound)
}
