package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Env is observability set up from the environment by FromEnv: providers to pass to
// processor and distributed (WithTracerProvider, WithMeterProvider), no-ops for what
// the environment leaves off.
type Env struct {
	Tracer trace.TracerProvider
	Meter  metric.MeterProvider
	// MetricsAddr is where /metrics is served ("" when off).
	MetricsAddr string

	closers []func(context.Context) error
}

// FromEnv reads the environment: OTEL_EXPORTER_OTLP_ENDPOINT (an OTLP/HTTP collector
// such as Jaeger, http://host:4318) turns tracing on; METRICS_ADDR (host:port) serves
// Prometheus /metrics there. Unset means off. What it started is logged to log (nil:
// not logged) and stopped by Close.
func FromEnv(ctx context.Context, service string, log *slog.Logger) (*Env, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Env{Tracer: tracenoop.NewTracerProvider(), Meter: metricnoop.NewMeterProvider()}
	tp, err := NewTracing(ctx, service, "")
	switch {
	case err == nil:
		e.Tracer = tp
		e.closers = append(e.closers, tp.Shutdown)
		log.Info("traces: OTLP", "endpoint", os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "service", service)
	case !errors.Is(err, ErrNoEndpoint):
		return nil, err
	}
	if addr := os.Getenv("METRICS_ADDR"); addr != "" {
		prom, err := NewPrometheus(service)
		if err != nil {
			e.Close()
			return nil, err
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("metrics: METRICS_ADDR %s: %w", addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", prom.Handler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
		e.Meter = prom.Provider
		e.MetricsAddr = l.Addr().String()
		e.closers = append(e.closers, srv.Shutdown, prom.Shutdown)
		log.Info("metrics: serving", "url", "http://"+e.MetricsAddr+"/metrics")
	}
	return e, nil
}

// Close flushes spans and stops the metrics server (bounded by 5 s).
func (e *Env) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i](ctx)
	}
	e.closers = nil
}
