package telemetry

import (
	"context"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/samsa-go/samsa/internal/record"
)

// Observer sees one slot's batches pass the processor's stages, so the stages carry no
// tracing or metrics code of their own: the data path calls one interface, and a no-op
// observer costs a method call per batch. A slot's observer is called from that slot's worker goroutine,
// and, for a batch handled in units (Config.Concurrency), Retried, Skipped and
// DeadLettered from its units' goroutines too.
type Observer interface {
	// Batch is called when a batch is handed to the handler. The context it returns is the
	// handler's: it carries the batch span, so the handler's own spans are its children.
	Batch(ctx context.Context, inputs []record.Message) context.Context
	// Handled is called when the handler (and the error policy) finished the batch.
	Handled(ctx context.Context, records int, took time.Duration, err error)
	// Send is called just before the batch's outputs are produced; it may set trace
	// headers on them. The returned context is the send's, given back to Settled.
	Send(ctx context.Context, outs []record.Message) context.Context
	// SendUnits is Send for a batch handled in units (Config.Concurrency), at its first
	// unit with outputs: it starts the send span and leaves the batch span to
	// UnitsHandled. Inject sets the send's trace headers on each unit's outputs.
	SendUnits(ctx context.Context) context.Context
	Inject(sendCtx context.Context, outs []record.Message)
	// UnitsHandled is Handled for a batch handled in units, once its last unit finished:
	// it ends the batch span, and the send span too when err is set (the batch will not
	// settle). sendCtx is SendUnits's, nil when no unit had outputs.
	UnitsHandled(ctx, sendCtx context.Context, records int, took time.Duration, err error)
	// Settled is called when the batch's outputs were acknowledged and its next offset
	// stored (at-least-once) or registered in the open transaction (exactly-once); ctx is
	// the one Batch returned, sendCtx the one Send returned (nil without outputs), err the
	// store's failure, if any.
	Settled(ctx, sendCtx context.Context, next record.Offset, outs int, sentAt, arrivedAt time.Time, err error)
	// Skipped counts records skipped by the Skip policy; DeadLettered, records sent to the
	// dead-letter topic.
	Skipped(n int)
	DeadLettered(n int)
	// Retried counts a batch handled or produced again after a failure; reason is
	// "retry", "narrow" or "resend".
	Retried(reason string)
}

// ProcessorObserver returns the OTel observer of one slot of a processor in group.
func (t *Telemetry) ProcessorObserver(group string, partition int32) Observer {
	return &slotObserver{
		t:     t,
		group: group,
		slot:  partition,
		attrs: metric.WithAttributeSet(attribute.NewSet(semconv.MessagingConsumerGroupName(group),
			semconv.MessagingDestinationPartitionID(strconv.Itoa(int(partition))))),
	}
}

type slotObserver struct {
	t     *Telemetry
	group string
	slot  int32
	attrs metric.MeasurementOption // group and partition
}

func (o *slotObserver) Batch(ctx context.Context, inputs []record.Message) context.Context {
	t := o.t
	ctx, links := t.BatchParent(ctx, inputs)
	n := len(inputs)
	topic := inputs[0].Topic
	ctx, span := t.Tracer.Start(ctx, "process "+topic, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...),
		trace.WithAttributes(KafkaAttrs(topic, o.slot, o.group)...), trace.WithAttributes(
			semconv.MessagingOperationTypeProcess, semconv.MessagingOperationName("process"),
			semconv.MessagingBatchMessageCount(n),
			attribute.Int64("samsa.batch.first_offset", inputs[0].Offset),
			attribute.Int64("samsa.batch.last_offset", inputs[n-1].Offset)))
	if t.RecordKeys && n == 1 && inputs[0].Key != nil {
		span.SetAttributes(semconv.MessagingKafkaMessageKey(string(inputs[0].Key)))
	}
	return ctx
}

func (o *slotObserver) Handled(ctx context.Context, records int, took time.Duration, err error) {
	t := o.t
	t.BatchSize.Record(ctx, int64(records), o.attrs)
	t.HandleDuration.Record(ctx, took.Seconds(), o.attrs)
	t.RecordsConsumed.Add(ctx, int64(records), o.attrs)
	span := trace.SpanFromContext(ctx)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "batch failed")
		span.End()
	}
	// A handled batch's span ends at Send, so that it covers building the outputs.
}

func (o *slotObserver) Send(ctx context.Context, outs []record.Message) context.Context {
	t := o.t
	defer trace.SpanFromContext(ctx).End() // the batch span
	if len(outs) == 0 {
		return nil
	}
	pctx, _ := t.Tracer.Start(ctx, "send", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(semconv.MessagingSystemKafka, semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("send"),
			semconv.MessagingBatchMessageCount(len(outs))))
	// Every output of a sampled batch carries the send span as its creation context; an
	// unsampled batch's outputs carry none (see InjectSampled).
	t.InjectSampled(pctx, outs)
	return pctx
}

func (o *slotObserver) SendUnits(ctx context.Context) context.Context {
	pctx, _ := o.t.Tracer.Start(ctx, "send", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(semconv.MessagingSystemKafka, semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("send")))
	return pctx
}

func (o *slotObserver) UnitsHandled(ctx, sendCtx context.Context, records int, took time.Duration, err error) {
	o.Handled(ctx, records, took, err) // ends the batch span when err is set
	if err == nil {
		trace.SpanFromContext(ctx).End()
		return
	}
	if sendCtx != nil {
		span := trace.SpanFromContext(sendCtx)
		span.SetStatus(codes.Error, "batch failed")
		span.End()
	}
}

func (o *slotObserver) Inject(sendCtx context.Context, outs []record.Message) {
	if sendCtx != nil {
		o.t.InjectSampled(sendCtx, outs)
	}
}

func (o *slotObserver) Settled(ctx, sendCtx context.Context, next record.Offset, outs int, sentAt, arrivedAt time.Time, err error) {
	t := o.t
	if sendCtx != nil {
		trace.SpanFromContext(sendCtx).End()
		t.ProduceDuration.Record(ctx, time.Since(sentAt).Seconds(), o.attrs)
		t.RecordsProduced.Add(ctx, int64(outs), o.attrs)
	}
	_, span := t.Tracer.Start(ctx, "commit "+next.Topic, trace.WithAttributes(
		semconv.MessagingSystemKafka, semconv.MessagingOperationTypeSettle, semconv.MessagingOperationName("commit"),
		attribute.Int64("samsa.commit.offset", next.Offset)))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "store offsets")
	}
	span.End()
	if err == nil {
		t.CommitLatency.Record(ctx, time.Since(arrivedAt).Seconds(), o.attrs)
	}
}

func (o *slotObserver) Skipped(n int) {
	o.t.RecordsSkipped.Add(context.Background(), int64(n), o.attrs)
}

func (o *slotObserver) DeadLettered(n int) {
	o.t.DeadLettered.Add(context.Background(), int64(n), o.attrs)
}

func (o *slotObserver) Retried(reason string) {
	o.t.Retries.Add(context.Background(), 1, o.attrs, metric.WithAttributes(attribute.String("reason", reason)))
}
