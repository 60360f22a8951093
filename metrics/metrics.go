// Package metrics wires samsa's OpenTelemetry instruments to Prometheus, and traces to an
// OTLP collector (Jaeger), for applications and examples. The library packages use the
// OTel API only; this package is where the SDK and exporters live.
//
// # Instruments
//
// processor: samsa.records.consumed, samsa.records.produced, samsa.records.skipped,
// samsa.records.dead_lettered, samsa.batch.retries (by reason), samsa.batch.size, samsa.batch.handle.duration,
// samsa.batch.produce.duration, samsa.batch.commit.latency, samsa.rebalances,
// samsa.consumer.lag (per owned partition). distributed:
// samsa.distributed.processes.running, samsa.distributed.handoff.duration,
// samsa.distributed.restarts. processor/view: samsa.view.lag (per partition),
// samsa.view.keys, samsa.view.bytes, samsa.view.records.skipped (by reason). In
// Prometheus, dots become underscores and units and
// _total suffixes are appended (samsa_records_consumed_total, samsa_consumer_lag, ...).
// Attributes follow OTel's messaging conventions (messaging_consumer_group_name,
// messaging_destination_name, messaging_destination_partition_id); keys, values and
// configuration never become labels.
//
// # Lifecycle
//
// NewPrometheus and NewTracing return providers to pass to processor and distributed
// (WithMeterProvider, WithTracerProvider) or to install globally; Shutdown flushes them.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	promclient "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// Prometheus is a MeterProvider whose metrics are served in the Prometheus text format.
type Prometheus struct {
	Provider *sdkmetric.MeterProvider
	registry *promclient.Registry
}

// NewPrometheus creates a MeterProvider exporting to a private Prometheus registry (so
// several in one process, as in tests, do not collide). The registry also serves the Go
// runtime collector (go_goroutines, go_memstats_*, go_gc_duration_seconds, ...) and the
// process collector (process_resident_memory_bytes, process_cpu_seconds_total,
// process_open_fds, ...; on Linux, read from /proc).
func NewPrometheus(service string) (*Prometheus, error) {
	reg := promclient.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("metrics: Go runtime collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("metrics: process collector: %w", err)
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("metrics: prometheus exporter: %w", err)
	}
	res, err := serviceResource(service)
	if err != nil {
		return nil, err
	}
	return &Prometheus{
		Provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res)),
		registry: reg,
	}, nil
}

// Handler serves /metrics.
func (p *Prometheus) Handler() http.Handler {
	return promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{})
}

// Shutdown stops the provider.
func (p *Prometheus) Shutdown(ctx context.Context) error { return p.Provider.Shutdown(ctx) }

// NewTracing creates a TracerProvider that batches spans to an OTLP/HTTP collector such
// as Jaeger. endpoint is host:port or a URL; empty means $OTEL_EXPORTER_OTLP_ENDPOINT,
// and when that is unset too it returns ErrNoEndpoint (run without tracing).
func NewTracing(ctx context.Context, service, endpoint string) (*sdktrace.TracerProvider, error) {
	if endpoint == "" {
		endpoint = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if endpoint == "" {
		return nil, ErrNoEndpoint
	}
	opts := []otlptracehttp.Option{}
	switch {
	case strings.HasPrefix(endpoint, "https://"):
		opts = append(opts, otlptracehttp.WithEndpoint(strings.TrimSuffix(strings.TrimPrefix(endpoint, "https://"), "/")))
	default:
		opts = append(opts, otlptracehttp.WithEndpoint(strings.TrimSuffix(strings.TrimPrefix(endpoint, "http://"), "/")), otlptracehttp.WithInsecure())
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("metrics: OTLP trace exporter: %w", err)
	}
	res, err := serviceResource(service)
	if err != nil {
		return nil, err
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// ErrNoEndpoint is returned by NewTracing when no collector endpoint is configured.
var ErrNoEndpoint = errors.New("metrics: no OTLP endpoint (set OTEL_EXPORTER_OTLP_ENDPOINT)")

func serviceResource(service string) (*resource.Resource, error) {
	if service == "" {
		service = "samsa"
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, fmt.Errorf("metrics: resource: %w", err)
	}
	return res, nil
}
