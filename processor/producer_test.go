package processor_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/processor/topics"
)

// A producer to a cluster nobody answers for fails in NewProducer, within its
// StartTimeout, naming the address, instead of holding records for the delivery timeout.
func TestProducerUnreachableFailsAtStart(t *testing.T) {
	out := processor.NewOutput("orders", codec.String(), codec.String())
	start := time.Now()
	p, err := topics.NewProducer(topics.ProducerConfig{Brokers: "127.0.0.1:1", StartTimeout: 2 * time.Second}, out)
	took := time.Since(start)
	t.Logf("NewProducer failed after %s: %v", took.Round(time.Millisecond), err)
	require.Error(t, err)
	assert.Nil(t, p)
	assert.Contains(t, err.Error(), "127.0.0.1:1", "the error names the address")
	assert.Less(t, took, 10*time.Second, "bounded by StartTimeout")
}

// A producer to a topic that does not exist fails in NewProducer naming the topic.
func TestProducerMissingTopicFailsAtStart(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "orders", Partitions: 1})
	_, err := topics.NewProducer(topics.ProducerConfig{Brokers: brokers, StartTimeout: 5 * time.Second},
		processor.NewOutput("totals", codec.String(), codec.String()))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"totals"`)
	assert.Contains(t, err.Error(), "does not exist")

	_, err = topics.NewProducer(topics.ProducerConfig{Brokers: brokers, StartTimeout: -time.Second, DeliveryTimeout: -time.Second},
		processor.NewOutput("orders", codec.String(), codec.String()))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "StartTimeout = -1s, must not be negative")
	assert.Contains(t, err.Error(), "DeliveryTimeout = -1s, must not be negative")
}

// Once the broker is gone, SendMany returns when its context ends, and without a
// deadline of its own, within DeliveryTimeout, naming the record and the topic.
func TestProducerSendBoundedWhenBrokerGone(t *testing.T) {
	b, err := embedded.Start(embedded.Topic{Name: "orders", Partitions: 1})
	require.NoError(t, err)
	p, err := topics.NewProducer(topics.ProducerConfig{Brokers: b.Bootstrap(), DeliveryTimeout: 2 * time.Second},
		processor.NewOutput("orders", codec.String(), codec.String()))
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Send(context.Background(), "k", "first"))
	b.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Send(ctx, "k", "second")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 2*time.Second, "returns when its context ends")

	start = time.Now()
	err = p.SendMany(context.Background(), []topics.Record[string, string]{{Key: "k", Value: "third"}})
	took := time.Since(start)
	t.Logf("SendMany failed after %s: %v", took.Round(time.Millisecond), err)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `record 0 to "orders"`)
	assert.Less(t, took, 15*time.Second, "bounded by DeliveryTimeout")
}

// SendMany under a caller's span is a "send <topic>" child span whose context every
// record carries, so the processor that reads the records joins the caller's trace; an
// unsampled caller's records carry no trace header.
func TestProducerTraceJoinsProcessor(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1})
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())

	prod, err := topics.NewProducer(topics.ProducerConfig{Brokers: brokers}, processor.NewOutput("in", codec.Int64(), codec.Int64()),
		topics.WithTracerProvider(tp))
	require.NoError(t, err)
	defer prod.Close()
	ctx, checkout := tp.Tracer("app").Start(context.Background(), "checkout")
	require.NoError(t, prod.SendMany(ctx, []topics.Record[int64, int64]{{Key: 1, Value: 2}, {Key: 3, Value: 4, Headers: []processor.Header{{Key: "h", Value: []byte("v")}}}}))
	checkout.End()
	unsampledTP := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	uctx, unsampled := unsampledTP.Tracer("app").Start(context.Background(), "quiet")
	require.NoError(t, prod.SendMany(uctx, []topics.Record[int64, int64]{{Key: 5, Value: 6}}))
	unsampled.End()

	var send sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		if s.Name() == "send in" && s.Parent().SpanID() == checkout.SpanContext().SpanID() {
			send = s
		}
	}
	require.NotNil(t, send, "spans: %v", names(spans.Ended()))
	assert.Equal(t, trace.SpanKindProducer, send.SpanKind())
	assert.Equal(t, "2", attrMap(send.Attributes())["messaging.batch.message_count"])

	recs := consumeAll(t, brokers, "in", 3, 20*time.Second)
	require.Len(t, recs, 3)
	for i, m := range recs {
		carrier := propagation.MapCarrier{}
		for _, h := range m.Headers {
			carrier[h.Key] = string(h.Value)
		}
		sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
		if i == 2 {
			assert.False(t, sc.IsValid(), "an unsampled send's record carries no trace context: %v", m.Headers)
			continue
		}
		assert.Equal(t, send.SpanContext().SpanID(), sc.SpanID(), "record %d carries the send span", i)
		if i == 1 {
			assert.Equal(t, "v", carrier["h"], "the record's own header is kept")
		}
	}

	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "joined", BatchWait: 5 * time.Millisecond, BatchSize: 1},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](doubler), processor.WithTracerProvider(tp))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool { return committed(t, brokers, "joined", "in", 1)[0] == 3 }))
	joined := 0
	for _, s := range spans.Ended() {
		if s.Name() == "process in" && s.SpanContext().TraceID() == checkout.SpanContext().TraceID() {
			joined++
			assert.Equal(t, send.SpanContext().SpanID(), s.Parent().SpanID())
		}
	}
	assert.Equal(t, 2, joined, "the batches of the traced records join the caller's trace")
}

// A processor's clients are named "<group>@<host>/<pid>" by default, so a group's member
// list tells processes apart (librdkafka's default names every client "rdkafka").
func TestDefaultClientIDNamesGroupHostAndProcess(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1})
	produceInts(t, brokers, "in", 1, 5)
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "named", BatchWait: 5 * time.Millisecond},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(context.Context, *processor.Batch[int64, int64]) error { return nil }))
	require.NoError(t, err)
	ac, err := admin.Dial(brokers, nil, nil)
	require.NoError(t, err)
	defer ac.Close()
	host, err := os.Hostname()
	require.NoError(t, err)
	want := fmt.Sprintf("named@%s/%d", host, os.Getpid())
	var seen []string
	require.NoError(t, runUntil(t, p, func() bool {
		g, err := ac.DescribeGroup(context.Background(), "named")
		if err != nil || len(g.Members) == 0 {
			return false
		}
		seen = []string{g.Members[0].ClientID}
		return true
	}))
	assert.Equal(t, []string{want}, seen)
}
