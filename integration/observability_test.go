package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/metrics"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/processor/topics"
)

// TestTracePathInJaeger: a record produced under a traced producer's span passes through
// a processor into an output topic read by a traced consumer; the whole path is one
// trace, found through the real Jaeger's HTTP API.
func TestTracePathInJaeger(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	otlp, queryURL := stack.JaegerEndpoints(t)
	in, out := stack.UniqueName("traced-in"), stack.UniqueName("traced-out")
	harness.CreateTopic(t, brokers, in, 1, 1)
	harness.CreateTopic(t, brokers, out, 1, 1)
	suffix := stack.UniqueName("e2e")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	newTP := func(service string) interface {
		trace.TracerProvider
		Shutdown(context.Context) error
	} {
		tp, err := metrics.NewTracing(ctx, service+"-"+suffix, "http://"+otlp)
		require.NoError(t, err)
		return tp
	}
	producerTP, processorTP, consumerTP := newTP("producer"), newTP("processor"), newTP("consumer")

	// The outside producer, traced.
	pctx, send := producerTP.Tracer("test").Start(ctx, "send "+in, trace.WithSpanKind(trace.SpanKindProducer))
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(pctx, carrier)
	var headers []kafka.Header
	for k, v := range carrier {
		headers = append(headers, kafka.Header{Key: k, Value: []byte(v)})
	}
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	require.NoError(t, err)
	dr := make(chan kafka.Event, 1)
	v := binary.BigEndian.AppendUint64(nil, 21)
	require.NoError(t, p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &in, Partition: 0}, Key: v, Value: v, Headers: headers}, dr))
	require.NoError(t, (<-dr).(*kafka.Message).TopicPartition.Error)
	p.Close()
	send.End()
	traceID := send.SpanContext().TraceID()

	// The processor.
	outTopic := processor.NewOutput(out, codec.Int64(), codec.Int64())
	group := stack.UniqueName("traced")
	proc, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: group, BatchWait: 5 * time.Millisecond},
		[]processor.Input[int64, int64]{{Topic: in, Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
			for _, r := range b.Records {
				if err := outTopic.Send(b, r.Key, 2*r.Value); err != nil {
					return err
				}
			}
			return nil
		}), processor.WithTracerProvider(processorTP))
	require.NoError(t, err)
	runCtx, stopRun := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- proc.Run(runCtx) }()

	// The outside consumer, traced: its span continues the output's context.
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": stack.UniqueName("traced-reader"), "auto.offset.reset": "earliest", "log_level": 3})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Subscribe(out, nil))
	var got *kafka.Message
	for deadline := time.Now().Add(time.Minute); got == nil && time.Now().Before(deadline); {
		if m, ok := c.Poll(100).(*kafka.Message); ok && m.TopicPartition.Error == nil {
			got = m
		}
	}
	require.NotNil(t, got, "no output within a minute")
	oc := propagation.MapCarrier{}
	for _, h := range got.Headers {
		oc[h.Key] = string(h.Value)
	}
	_, recv := consumerTP.Tracer("test").Start(propagation.TraceContext{}.Extract(ctx, oc), "process "+out, trace.WithSpanKind(trace.SpanKindConsumer))
	recv.End()
	stopRun()
	require.NoError(t, <-errc)
	for _, tp := range []interface{ Shutdown(context.Context) error }{producerTP, processorTP, consumerTP} {
		require.NoError(t, tp.Shutdown(ctx))
	}

	// One trace in Jaeger, with every hop.
	tr := waitTrace(t, ctx, queryURL, traceID.String(), []string{"send " + in, "process " + in, "send", "commit " + in, "process " + out})
	services := map[string]bool{}
	for _, s := range tr.Spans {
		services[tr.Processes[s.ProcessID].ServiceName] = true
	}
	assert.Len(t, services, 3, "producer, processor and consumer in one trace: %v", services)
	process, _ := tr.SpanByOperation("process " + in)
	assert.Equal(t, "kafka", fmt.Sprint(tagOr(process, "messaging.system")))
	assert.Equal(t, group, fmt.Sprint(tagOr(process, "messaging.consumer.group.name")))
}

// TestProducerTraceInJaeger: a service sends records with processor.Producer under its
// own span; the producer's send span and the processor's batch span join that trace,
// found through the real Jaeger's HTTP API.
func TestProducerTraceInJaeger(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	otlp, queryURL := stack.JaegerEndpoints(t)
	in := stack.UniqueName("ptraced-in")
	harness.CreateTopic(t, brokers, in, 1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	suffix := stack.UniqueName("feed")
	appTP, err := metrics.NewTracing(ctx, "app-"+suffix, "http://"+otlp)
	require.NoError(t, err)
	procTP, err := metrics.NewTracing(ctx, "processor-"+suffix, "http://"+otlp)
	require.NoError(t, err)

	prod, err := topics.NewProducer(topics.ProducerConfig{Brokers: brokers}, processor.NewOutput(in, codec.String(), codec.String()),
		topics.WithTracerProvider(appTP))
	require.NoError(t, err)
	sctx, span := appTP.Tracer("app").Start(ctx, "checkout")
	require.NoError(t, prod.SendMany(sctx, []topics.Record[string, string]{{Key: "o1", Value: "42"}}))
	span.End()
	prod.Close()
	traceID := span.SpanContext().TraceID()

	group := stack.UniqueName("ptraced")
	proc, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: group, BatchWait: 5 * time.Millisecond},
		[]processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
		processor.HandlerFunc[string, string](func(context.Context, *processor.Batch[string, string]) error { return nil }),
		processor.WithTracerProvider(procTP))
	require.NoError(t, err)
	runCtx, stopRun := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- proc.Run(runCtx) }()
	require.Eventually(t, func() bool { return harness.CommittedOffsets(t, brokers, group, in, 1)[0] == 1 }, time.Minute, 100*time.Millisecond)
	stopRun()
	require.NoError(t, <-errc)
	require.NoError(t, appTP.Shutdown(ctx))
	require.NoError(t, procTP.Shutdown(ctx))

	tr := waitTrace(t, ctx, queryURL, traceID.String(), []string{"checkout", "send " + in, "process " + in})
	send, _ := tr.SpanByOperation("send " + in)
	process, _ := tr.SpanByOperation("process " + in)
	assert.Equal(t, "app-"+suffix, tr.Processes[send.ProcessID].ServiceName)
	assert.Equal(t, "processor-"+suffix, tr.Processes[process.ProcessID].ServiceName)
}

// TestHandoffTraceInJaeger: two printers nodes (separate OS processes, the example
// binary) hand a slice over on SIGTERM; Jaeger shows the old node's stop span and the new
// node's start span in one trace, the start linked to the stop.
func TestHandoffTraceInJaeger(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	otlp, queryURL := stack.JaegerEndpoints(t)
	bin, envBin := harness.Build(t, "../examples/printers"), harness.EnvBin(t)

	name := stack.UniqueName("handoff")
	startNode := func(label string) *harness.WorkerProc {
		return harness.StartWorker(t, envBin, filepath.Join(t.TempDir(), label+".log"),
			"KAFKA_BROKERS="+brokers, "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+otlp, "OTEL_SERVICE_NAME=",
			bin, "-name", name, "-printers", "2", "-every", "200ms", "-for", "90s")
	}
	stop := func(w *harness.WorkerProc) {
		code, exited := w.Signal(syscall.SIGTERM, 60*time.Second)
		require.True(t, exited, "node pid %d did not exit within 1m0s of SIGTERM", w.Pid())
		require.Zero(t, code, "node exit")
	}
	a := startNode("a")
	time.Sleep(8 * time.Second) // a owns every slice
	b := startNode("b")
	time.Sleep(8 * time.Second) // b joins; cooperative: some slices move to b
	stop(a)
	time.Sleep(3 * time.Second) // a's slices start on b
	stop(b)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q := stack.JaegerQuery{URL: queryURL}
	var found string
	require.Eventually(t, func() bool {
		traces, err := q.Traces(ctx, "printers")
		if err != nil {
			return false
		}
		for _, tr := range traces {
			stop, okStop := tr.SpanByOperation("slice stop " + name)
			start, okStart := tr.SpanByOperation("slice start " + name)
			if !okStop || !okStart {
				continue
			}
			if fmt.Sprint(tagOr(stop, "samsa.distributed.node")) == fmt.Sprint(tagOr(start, "samsa.distributed.node")) {
				continue
			}
			for _, ref := range start.References {
				if ref.SpanID == stop.SpanID {
					found = fmt.Sprintf("trace %s: stop on %v, start on %v", tr.TraceID, tagOr(stop, "samsa.distributed.node"), tagOr(start, "samsa.distributed.node"))
					return true
				}
			}
		}
		return false
	}, 60*time.Second, time.Second, "no trace in Jaeger shows a slice of %s moving between the two nodes", name)
	t.Logf("hand-off in Jaeger: %s", found)
}

func tagOr(s stack.JaegerSpan, key string) any {
	v, _ := s.Tag(key)
	if str, ok := v.(string); ok {
		return strings.TrimSpace(str)
	}
	return v
}

// waitTrace waits up to a minute for Jaeger at queryURL to hold trace id with a span of
// every operation in want, and returns it.
func waitTrace(t *testing.T, ctx context.Context, queryURL, id string, want []string) stack.JaegerTrace {
	t.Helper()
	q := stack.JaegerQuery{URL: queryURL}
	var tr stack.JaegerTrace
	var err error
	require.Eventually(t, func() bool {
		tr, err = q.Trace(ctx, id)
		if err != nil {
			return false
		}
		for _, op := range want {
			if _, ok := tr.SpanByOperation(op); !ok {
				return false
			}
		}
		return true
	}, 60*time.Second, 500*time.Millisecond, "trace %s in Jaeger lacks some of %v (err %v)", id, want, err)
	return tr
}
