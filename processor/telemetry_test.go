package processor_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

// produceTraced writes one record whose headers carry the context of a producer span of
// tp, and returns that span's context.
func produceTraced(t *testing.T, brokers, topic string, tp trace.TracerProvider, key, value []byte) trace.SpanContext {
	t.Helper()
	ctx, span := tp.Tracer("test-producer").Start(context.Background(), "send "+topic, trace.WithSpanKind(trace.SpanKindProducer))
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	span.End()
	var headers []kafka.Header
	for k, v := range carrier {
		headers = append(headers, kafka.Header{Key: k, Value: []byte(v)})
	}
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	require.NoError(t, err)
	defer p.Close()
	dr := make(chan kafka.Event, 1)
	require.NoError(t, p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: 0}, Key: key, Value: value, Headers: headers}, dr))
	require.NoError(t, (<-dr).(*kafka.Message).TopicPartition.Error)
	return span.SpanContext()
}

func TestTracingAndMetricsOfABatch(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1})
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer tp.Shutdown(context.Background())
	defer mp.Shutdown(context.Background())

	key := []byte{0, 0, 0, 0, 0, 0, 0, 7} // int64 7: must not appear on any span
	producer := produceTraced(t, brokers, "in", tp, key, key)

	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "traced", BatchWait: 5 * time.Millisecond},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](doubler),
		processor.WithTracerProvider(tp), processor.WithMeterProvider(mp))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool { return committed(t, brokers, "traced", "in", 1)[0] == 1 }))

	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans.Ended() {
		byName[s.Name()] = s
	}
	process, send, commit := byName["process in"], byName["send"], byName["commit in"]
	require.NotNil(t, process, "spans: %v", names(spans.Ended()))
	require.NotNil(t, send)
	require.NotNil(t, commit)

	// One trace from the producer through the batch to its outputs.
	assert.Equal(t, trace.SpanKindConsumer, process.SpanKind())
	assert.Equal(t, producer.TraceID(), process.SpanContext().TraceID())
	assert.Equal(t, producer.SpanID(), process.Parent().SpanID())
	require.Len(t, process.Links(), 1)
	assert.Equal(t, producer.SpanID(), process.Links()[0].SpanContext.SpanID())
	attrs := attrMap(process.Attributes())
	assert.Equal(t, "kafka", attrs["messaging.system"])
	assert.Equal(t, "in", attrs["messaging.destination.name"])
	assert.Equal(t, "0", attrs["messaging.destination.partition.id"])
	assert.Equal(t, "traced", attrs["messaging.consumer.group.name"])
	assert.Equal(t, "1", attrs["messaging.batch.message_count"])
	assert.Equal(t, "process", attrs["messaging.operation.type"])

	assert.Equal(t, trace.SpanKindProducer, send.SpanKind())
	assert.Equal(t, process.SpanContext().SpanID(), send.Parent().SpanID())
	assert.Equal(t, process.SpanContext().SpanID(), commit.Parent().SpanID())

	for _, s := range spans.Ended() {
		for _, a := range s.Attributes() {
			assert.NotEqual(t, "messaging.kafka.message.key", string(a.Key), "span %q records the key without opt-in", s.Name())
		}
	}

	// The output carries the send span's context.
	out := consumeAll(t, brokers, "out", 1, 20*time.Second)
	require.Len(t, out, 1)
	carrier := propagation.MapCarrier{}
	for _, h := range out[0].Headers {
		carrier[h.Key] = string(h.Value)
	}
	got := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
	assert.Equal(t, send.SpanContext().SpanID(), got.SpanID())
	assert.Equal(t, producer.TraceID(), got.TraceID())

	// Metrics.
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	sums := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					sums[m.Name] += dp.Value
				}
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					sums[m.Name] += int64(dp.Count)
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					sums[m.Name] += int64(dp.Count)
				}
			}
		}
	}
	assert.EqualValues(t, 1, sums["samsa.records.consumed"])
	assert.EqualValues(t, 1, sums["samsa.records.produced"])
	assert.EqualValues(t, 1, sums["samsa.batch.size"])
	assert.EqualValues(t, 1, sums["samsa.batch.commit.latency"])
	assert.GreaterOrEqual(t, sums["samsa.rebalances"], int64(1))
}

func TestTracedKeysOptIn(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1})
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	produceTraced(t, brokers, "in", tp, []byte("user-42!"), []byte{0, 0, 0, 0, 0, 0, 0, 1})
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "keys", BatchWait: 5 * time.Millisecond},
		[]processor.Input[string, int64]{{Topic: "in", Key: codec.String(), Value: codec.Int64()}},
		processor.HandlerFunc[string, int64](func(context.Context, *processor.Batch[string, int64]) error { return nil }),
		processor.WithTracerProvider(tp), processor.WithTracedKeys())
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool { return committed(t, brokers, "keys", "in", 1)[0] == 1 }))
	for _, s := range spans.Ended() {
		if s.Name() == "process in" {
			assert.Equal(t, "user-42!", attrMap(s.Attributes())["messaging.kafka.message.key"])
			return
		}
	}
	t.Fatalf("no process span among %v", names(spans.Ended()))
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var n []string
	for _, s := range spans {
		n = append(n, s.Name())
	}
	return n
}

// TestEmptyPropagatorWritesNoHeaders: with spans on, an empty propagator keeps trace
// context out of the outputs (the per-record header is what tracing costs in CPU), while
// the default one puts traceparent on every output of a sampled batch, and on none of an
// unsampled one.
func TestEmptyPropagatorWritesNoHeaders(t *testing.T) {
	for _, c := range []struct {
		name    string
		prop    propagation.TextMapPropagator
		sampler sdktrace.Sampler
		want    bool
	}{
		{"default", nil, sdktrace.AlwaysSample(), true},
		{"empty", propagation.NewCompositeTextMapPropagator(), sdktrace.AlwaysSample(), false},
		{"unsampled", nil, sdktrace.ParentBased(sdktrace.NeverSample()), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1})
			produceInts(t, brokers, "in", 1, 20)
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(c.sampler))
			defer tp.Shutdown(context.Background())
			opts := []processor.Option{processor.WithTracerProvider(tp)}
			if c.prop != nil {
				opts = append(opts, processor.WithPropagator(c.prop))
			}
			p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "prop", BatchWait: 5 * time.Millisecond},
				[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
				processor.HandlerFunc[int64, int64](doubler), opts...)
			require.NoError(t, err)
			require.NoError(t, runUntil(t, p, func() bool { return committed(t, brokers, "prop", "in", 1)[0] == 20 }))
			out := consumeAll(t, brokers, "out", 20, 30*time.Second)
			require.Len(t, out, 20)
			for _, m := range out {
				has := false
				for _, h := range m.Headers {
					has = has || h.Key == "traceparent"
				}
				assert.Equal(t, c.want, has, "traceparent on output %s", m.TopicPartition)
			}
		})
	}
}

// Every retry and narrowing of a failing batch is counted (samsa.batch.retries, by reason).
func TestRetriesAreCounted(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	inputs := []processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}}
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: "unused:9092"}, Group: "g", ErrorPolicy: processor.Retry(2, processor.Backoff{Initial: time.Millisecond}, processor.Skip())}, inputs,
		processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
			return errors.New("store down")
		}), processor.WithMeterProvider(mp))
	require.NoError(t, err)
	d, err := samsatest.DriveProcessor(p, inputs, 0)
	require.NoError(t, err)
	res, err := d.Handle(t.Context(), processor.Record[string, string]{Key: "a", Value: "1"}, processor.Record[string, string]{Key: "b", Value: "2"})
	require.NoError(t, err)
	require.NoError(t, res.Err)

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	byReason := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "samsa.batch.retries" {
				for _, dp := range d.DataPoints {
					r, _ := dp.Attributes.Value("reason")
					byReason[r.AsString()] += dp.Value
				}
			}
		}
	}
	assert.Equal(t, map[string]int64{"retry": 2, "narrow": 1}, byReason)
}
