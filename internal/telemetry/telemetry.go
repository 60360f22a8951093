// Package telemetry holds the OpenTelemetry instruments and span helpers that processor
// and distributed share: spans named and attributed after OTel's messaging semantic
// conventions, W3C trace context carried in Kafka record headers, and the metric
// instruments. It uses the OTel API only; exporters are wired by the metrics package or
// the application. With the default (global, usually no-op) providers it costs next to
// nothing: no header is written and no link extracted unless a real tracer is installed.
package telemetry

import (
	"context"
	"strconv"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/samsa-go/samsa/internal/record"
)

// ScopeName is the instrumentation scope of every samsa span and instrument.
const ScopeName = "github.com/samsa-go/samsa"

// MaxLinks caps the links a batch span carries to its records' producer spans.
const MaxLinks = 128

// Telemetry is one component's tracer, propagator and instruments.
type Telemetry struct {
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
	RecordKeys bool // record message keys on spans (opt-in: keys can be personal data)

	RecordsConsumed metric.Int64Counter
	RecordsProduced metric.Int64Counter
	RecordsSkipped  metric.Int64Counter
	DeadLettered    metric.Int64Counter
	Retries         metric.Int64Counter
	BatchSize       metric.Int64Histogram
	HandleDuration  metric.Float64Histogram
	ProduceDuration metric.Float64Histogram
	CommitLatency   metric.Float64Histogram
	Rebalances      metric.Int64Counter
	ProcsRunning    metric.Int64UpDownCounter
	HandoffDuration metric.Float64Histogram
	Restarts        metric.Int64Counter
	meter           metric.Meter
}

// New builds the instruments from the providers (nil: the OTel globals).
func New(tp trace.TracerProvider, mp metric.MeterProvider, prop propagation.TextMapPropagator) *Telemetry {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	m := mp.Meter(ScopeName)
	t := &Telemetry{Tracer: tp.Tracer(ScopeName), Propagator: prop, meter: m}
	secs := metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
	// Instrument creation fails only on invalid names, which are constants here; a no-op
	// instrument is returned alongside any error, so ignoring it is safe.
	t.RecordsConsumed, _ = m.Int64Counter("samsa.records.consumed", metric.WithDescription("Records handed to handlers (after decoding)."), metric.WithUnit("{record}"))
	t.RecordsProduced, _ = m.Int64Counter("samsa.records.produced", metric.WithDescription("Output records acknowledged by the broker."), metric.WithUnit("{record}"))
	t.RecordsSkipped, _ = m.Int64Counter("samsa.records.skipped", metric.WithDescription("Records skipped by the Skip policy or as already applied (checkpoint)."), metric.WithUnit("{record}"))
	t.DeadLettered, _ = m.Int64Counter("samsa.records.dead_lettered", metric.WithDescription("Records written to the dead-letter topic."), metric.WithUnit("{record}"))
	t.Retries, _ = m.Int64Counter("samsa.batch.retries", metric.WithDescription("Batches handled or produced again after a failure, by reason: retry (Retry policy), narrow (handled one record at a time to find the failing ones), resend (outputs produced again), isolate (failed outputs produced one at a time to find those the broker refuses)."), metric.WithUnit("{batch}"))
	t.BatchSize, _ = m.Int64Histogram("samsa.batch.size", metric.WithDescription("Records per batch."), metric.WithUnit("{record}"),
		metric.WithExplicitBucketBoundaries(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000))
	t.HandleDuration, _ = m.Float64Histogram("samsa.batch.handle.duration", metric.WithDescription("Time in the handler per batch."), metric.WithUnit("s"), secs)
	t.ProduceDuration, _ = m.Float64Histogram("samsa.batch.produce.duration", metric.WithDescription("From producing a batch's outputs to the last acknowledgement."), metric.WithUnit("s"), secs)
	t.CommitLatency, _ = m.Float64Histogram("samsa.batch.commit.latency", metric.WithDescription("From a batch's first record arriving to its offset being stored for commit."), metric.WithUnit("s"), secs)
	t.Rebalances, _ = m.Int64Counter("samsa.rebalances", metric.WithDescription("Partitions assigned, revoked or lost, per event."), metric.WithUnit("{event}"))
	t.ProcsRunning, _ = m.Int64UpDownCounter("samsa.distributed.processes.running", metric.WithDescription("Process instances running on this node."), metric.WithUnit("{process}"))
	t.HandoffDuration, _ = m.Float64Histogram("samsa.distributed.handoff.duration", metric.WithDescription("Stopping a revoked slice (phase=stop) or claiming and starting an assigned one (phase=start)."), metric.WithUnit("s"), secs)
	t.Restarts, _ = m.Int64Counter("samsa.distributed.restarts", metric.WithDescription("Process restarts by Supervise."), metric.WithUnit("{restart}"))
	return t
}

// Meter is the scope's meter, for observable instruments registered by components.
func (t *Telemetry) Meter() metric.Meter { return t.meter }

// KafkaAttrs are the attributes every samsa span about a topic partition carries.
func KafkaAttrs(topic string, partition int32, group string) []attribute.KeyValue {
	a := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingDestinationName(topic),
		semconv.MessagingDestinationPartitionID(strconv.Itoa(int(partition))),
	}
	if group != "" {
		a = append(a, semconv.MessagingConsumerGroupName(group))
	}
	return a
}

// headerCarrier adapts record headers to the propagation API.
type headerCarrier struct{ h *[]record.Header }

func (c headerCarrier) Get(key string) string {
	for i := len(*c.h) - 1; i >= 0; i-- {
		if (*c.h)[i].Key == key {
			return string((*c.h)[i].Value)
		}
	}
	return ""
}

func (c headerCarrier) Set(key, value string) {
	for i := range *c.h {
		if (*c.h)[i].Key == key {
			(*c.h)[i].Value = []byte(value)
			return
		}
	}
	*c.h = append(*c.h, record.Header{Key: key, Value: []byte(value)})
}

func (c headerCarrier) Keys() []string {
	keys := make([]string, len(*c.h))
	for i, h := range *c.h {
		keys[i] = h.Key
	}
	return keys
}

// Inject writes ctx's span context into headers (traceparent, tracestate).
func (t *Telemetry) Inject(ctx context.Context, headers *[]record.Header) {
	t.Propagator.Inject(ctx, headerCarrier{headers})
}

// InjectSampled writes ctx's span context (W3C traceparent) into every record's headers
// when ctx's span is sampled. An unsampled span's records carry none: the header is most
// of what tracing costs (librdkafka copies it per record, the broker stores it), and a
// downstream consumer then decides on its own, as for a record produced without
// tracing. The headers are formatted once and shared: records without headers of their
// own get the same capacity-capped slice (an append to one copies), the others their
// own headers with the trace headers set.
func (t *Telemetry) InjectSampled(ctx context.Context, msgs []record.Message) {
	if !trace.SpanContextFromContext(ctx).IsSampled() {
		return
	}
	var shared []record.Header
	t.Inject(ctx, &shared)
	shared = shared[:len(shared):len(shared)]
	for i := range msgs {
		if len(msgs[i].Headers) == 0 {
			msgs[i].Headers = shared
		} else {
			t.Inject(ctx, &msgs[i].Headers)
		}
	}
}

// StartSend starts the span of a standalone producer's send of msgs to topic (a child
// of ctx's span, if any) and injects its context into msgs when it is sampled, so the
// processors that read them continue the trace. The caller ends the span.
func (t *Telemetry) StartSend(ctx context.Context, topic string, msgs []record.Message) (context.Context, trace.Span) {
	ctx, span := t.Tracer.Start(ctx, "send "+topic, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(semconv.MessagingSystemKafka, semconv.MessagingDestinationName(topic),
			semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("send"),
			semconv.MessagingBatchMessageCount(len(msgs))))
	t.InjectSampled(ctx, msgs)
	return ctx, span
}

// Extract reads a span context from headers; the result is invalid when there is none.
func (t *Telemetry) Extract(headers []record.Header) trace.SpanContext {
	if len(headers) == 0 {
		return trace.SpanContext{}
	}
	h := headers // a local taken by address only here, so records without headers allocate nothing
	return trace.SpanContextFromContext(t.Propagator.Extract(context.Background(), headerCarrier{&h}))
}

// BatchParent returns the context a batch span starts from and the links to its records'
// creation contexts (at most MaxLinks). When every traced record belongs to one trace,
// the batch joins that trace as a child of the first record's span, so a single record's
// path from producer to outputs is one trace; otherwise the batch starts a new trace
// linked to all of them.
func (t *Telemetry) BatchParent(ctx context.Context, msgs []record.Message) (context.Context, []trace.Link) {
	var links []trace.Link
	var first trace.SpanContext
	oneTrace := true
	for i := range msgs {
		sc := t.Extract(msgs[i].Headers)
		if !sc.IsValid() {
			continue
		}
		if !first.IsValid() {
			first = sc
		} else if sc.TraceID() != first.TraceID() {
			oneTrace = false
		}
		if len(links) < MaxLinks {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	if first.IsValid() && oneTrace {
		return trace.ContextWithRemoteSpanContext(ctx, first), links
	}
	return ctx, links
}
