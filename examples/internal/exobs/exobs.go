// Package exobs wires the examples' observability from the environment the tests use:
// OTEL_EXPORTER_OTLP_ENDPOINT sends traces to an OTLP collector (Jaeger), METRICS_ADDR
// serves Prometheus /metrics there. Unset means off.
package exobs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/samsa-go/samsa/metrics"
)

// Obs holds the providers to pass to processor and distributed.
type Obs struct {
	Tracer  trace.TracerProvider
	Meter   metric.MeterProvider
	closers []func(context.Context) error
}

// Setup reads the environment. Close flushes and stops everything it started.
func Setup(ctx context.Context, service string) (*Obs, error) {
	o := &Obs{Tracer: tracenoop.NewTracerProvider(), Meter: noop.NewMeterProvider()}
	tp, err := metrics.NewTracing(ctx, service, "")
	switch {
	case err == nil:
		o.Tracer = tp
		o.closers = append(o.closers, tp.Shutdown)
		fmt.Fprintf(os.Stderr, "traces: OTLP to %s (service %q)\n", os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), service)
	case !errors.Is(err, metrics.ErrNoEndpoint):
		return nil, err
	}
	if addr := os.Getenv("METRICS_ADDR"); addr != "" {
		prom, err := metrics.NewPrometheus(service)
		if err != nil {
			return nil, err
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("METRICS_ADDR %s: %w", addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", prom.Handler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
		o.Meter = prom.Provider
		o.closers = append(o.closers, srv.Shutdown, prom.Shutdown)
		fmt.Fprintf(os.Stderr, "metrics: http://%s/metrics\n", l.Addr())
	}
	return o, nil
}

// Close flushes spans and stops the metrics server.
func (o *Obs) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := len(o.closers) - 1; i >= 0; i-- {
		o.closers[i](ctx)
	}
}
