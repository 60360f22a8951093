package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/codec/registry"
	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/internal/testpb"
	"github.com/samsa-go/samsa/processor"
)

// Schema-registry codecs on real Kafka and a real registry (rivven-schema, or
// $SCHEMA_REGISTRY_URL). Figures, one greppable line each:
//
//	registry-outage: records=… paused=… decode-retries=… lost=… dlq=…

type order struct {
	ID     string `avro:"id" json:"id"`
	Amount int64  `avro:"amount" json:"amount"`
	Seq    int64  `avro:"seq" json:"seq"`
}

func newRegistryClient(t *testing.T, url string, cfg registry.Config) *registry.Client {
	t.Helper()
	cfg.URL = url
	c, err := registry.NewClient(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip produces n values encoded by enc (an outside producer with its own registry
// client), runs a processor whose input decoder and output encoder are codecs of a
// second client, and decodes the output with a third: the schemas are registered by the
// encoders and fetched by ID by the decoders.
func roundTrip[T any](t *testing.T, brokers, in, out string, values []T, enc codec.Encoder[T], procIn codec.Decoder[T], procOut codec.Encoder[T], check codec.Decoder[T]) []T {
	t.Helper()
	harness.CreateTopic(t, brokers, in, 2, 1)
	harness.CreateTopic(t, brokers, out, 2, 1)
	harness.CreateTopic(t, brokers, out+".dlq", 1, 1)
	msgs := make([]*kafka.Message, len(values))
	for i, v := range values {
		b, err := enc.Encode(v)
		require.NoError(t, err)
		msgs[i] = &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &in, Partition: int32(i % 2)}, Key: []byte(key(i)), Value: b}
	}
	harness.ProduceMessages(t, brokers, msgs)

	output := processor.NewOutput(out, codec.String(), procOut)
	group := stack.UniqueName("registry-rt")
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: group, ErrorPolicy: processor.DeadLetter(out + ".dlq")},
		[]processor.Input[string, T]{{Topic: in, Key: codec.String(), Value: procIn}},
		copyHandler(output))
	require.NoError(t, err)
	harness.RunUntilCommitted(t, p.Run, brokers, group, in, 2)

	recs := harness.ReadTopic(t, brokers, out, 2, time.Minute)
	require.Len(t, recs, len(values))
	got := make([]T, len(values))
	for _, r := range recs {
		var i int
		_, err := fmt.Sscanf(string(r.Key), "k%06d", &i)
		require.NoError(t, err)
		got[i], err = check.Decode(r.Value)
		require.NoError(t, err)
	}
	return got
}

// schemaID is the ID in a registry-framed record.
func schemaID(b []byte) int { return int(binary.BigEndian.Uint32(b[1:5])) }

func TestRegistryRoundTripAllFormats(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	url := stack.SchemaRegistryURL(t)
	producer := newRegistryClient(t, url, registry.Config{})
	proc := newRegistryClient(t, url, registry.Config{})
	reader := newRegistryClient(t, url, registry.Config{})
	const n = 200

	t.Run("avro", func(t *testing.T) {
		in, out := stack.UniqueName("avro-in"), stack.UniqueName("avro-out")
		values := make([]order, n)
		for i := range values {
			values[i] = order{ID: fmt.Sprintf("o-%d", i), Amount: int64(i) * 100, Seq: int64(i)}
		}
		mk := func(c *registry.Client, topic string) codec.Codec[order] {
			cd, err := registry.Avro[order](c, topic, registry.Options{})
			require.NoError(t, err)
			return cd
		}
		got := roundTrip(t, brokers, in, out, values, mk(producer, in), mk(proc, in), mk(proc, out), mk(reader, out))
		assert.Equal(t, values, got)
		assertSubjectHasID(t, reader, in+"-value", mk(producer, in), values[0])
		assertSubjectHasID(t, reader, out+"-value", mk(proc, out), values[0])
	})
	t.Run("jsonschema", func(t *testing.T) {
		in, out := stack.UniqueName("js-in"), stack.UniqueName("js-out")
		values := make([]order, n)
		for i := range values {
			values[i] = order{ID: fmt.Sprintf("j-%d", i), Amount: int64(i), Seq: int64(i)}
		}
		mk := func(c *registry.Client, topic string) codec.Codec[order] {
			cd, err := registry.JSONSchema[order](c, topic, registry.Options{Validate: true})
			require.NoError(t, err)
			return cd
		}
		got := roundTrip(t, brokers, in, out, values, mk(producer, in), mk(proc, in), mk(proc, out), mk(reader, out))
		assert.Equal(t, values, got)
		assertSubjectHasID(t, reader, out+"-value", mk(proc, out), values[0])
	})
	t.Run("protobuf", func(t *testing.T) {
		in, out := stack.UniqueName("pb-in"), stack.UniqueName("pb-out")
		values := make([]*testpb.Order, n)
		for i := range values {
			values[i] = &testpb.Order{Id: fmt.Sprintf("p-%d", i), AmountCents: int64(i), Items: []string{"x", fmt.Sprint(i)}}
		}
		mk := func(c *registry.Client, topic string) codec.Codec[*testpb.Order] {
			cd, err := registry.Protobuf[*testpb.Order](c, topic, registry.Options{})
			require.NoError(t, err)
			return cd
		}
		got := roundTrip(t, brokers, in, out, values, mk(producer, in), mk(proc, in), mk(proc, out), mk(reader, out))
		for i := range values {
			assert.True(t, proto.Equal(values[i], got[i]), "record %d: %v != %v", i, values[i], got[i])
		}
		assertSubjectHasID(t, reader, out+"-value", mk(proc, out), values[0])
	})
}

// assertSubjectHasID checks that what enc writes carries the ID the registry holds as the
// subject's latest version.
func assertSubjectHasID[T any](t *testing.T, c *registry.Client, subject string, enc codec.Encoder[T], v T) {
	t.Helper()
	id, s, err := c.Latest(subject)
	require.NoError(t, err, "subject %s registered", subject)
	b, err := enc.Encode(v)
	require.NoError(t, err)
	assert.Equal(t, id, schemaID(b), "subject %s", subject)
	byID, err := c.SchemaByID(id)
	require.NoError(t, err)
	assert.Equal(t, s, byID)
}

// TestRegistryOutageUnderLoad: records are produced continuously (their producer has the
// schema ID cached, as a running service does); a processor with a fresh registry
// client (as after a deploy) starts while the registry is paused for 10 s. It cannot
// decode, so it waits and commits nothing; when the registry answers again it resumes
// by itself. Every input reaches the output, nothing is dead-lettered.
func TestRegistryOutageUnderLoad(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	reg, err := stack.StartRegistry(ctx, stack.RegistryOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { reg.Close() })

	in, out, dlq := stack.UniqueName("outage-in"), stack.UniqueName("outage-out"), stack.UniqueName("outage-dlq")
	for _, topic := range []string{in, out, dlq} {
		harness.CreateTopic(t, brokers, topic, 2, 1)
	}
	fast := registry.Config{RequestTimeout: 500 * time.Millisecond, Retries: -1}
	enc, err := registry.Avro[order](newRegistryClient(t, reg.URL(), fast), in, registry.Options{})
	require.NoError(t, err)
	_, err = enc.Encode(order{}) // registers the schema and caches its ID
	require.NoError(t, err)

	// Load: 100 records/s for the whole test, through the outage.
	prod, err := harness.NewProducer(brokers)
	require.NoError(t, err)
	defer prod.Close()
	var produced, acked, failed atomic.Int64
	dr := make(chan kafka.Event, 1000)
	drDone := make(chan struct{})
	go func() {
		defer close(drDone)
		for ev := range dr {
			if m, ok := ev.(*kafka.Message); ok {
				if m.TopicPartition.Error != nil {
					failed.Add(1)
				} else {
					acked.Add(1)
				}
			}
		}
	}()
	loadDone := make(chan struct{})
	stopLoad := make(chan struct{})
	go func() {
		defer close(loadDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := int64(0); ; i++ {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			b, err := enc.Encode(order{ID: key(int(i)), Amount: i, Seq: i})
			if err != nil {
				t.Errorf("producer encode during the outage (its ID is cached): %v", err)
				return
			}
			if err := prod.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &in, Partition: kafka.PartitionAny}, Key: []byte(key(int(i))), Value: b}, dr); err != nil {
				t.Errorf("produce: %v", err)
				return
			}
			produced.Add(1)
		}
	}()

	time.Sleep(time.Second)
	require.NoError(t, reg.Pause())
	pausedAt := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			reg.Resume()
		}
	}()

	var retries atomic.Int64
	logger := slog.New(countingHandler{n: &retries, msg: "processor: codec dependency unavailable, retrying decode"})
	dec, err := registry.Avro[order](newRegistryClient(t, reg.URL(), fast), in, registry.Options{})
	require.NoError(t, err)
	var mu sync.Mutex
	seen := map[int64]int{}
	output := processor.NewOutput(out, codec.String(), codec.Encoder[order](codec.JSON[order]()))
	group := stack.UniqueName("outage")
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: group, ErrorPolicy: processor.Retry(3, processor.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}, processor.DeadLetter(dlq))},
		[]processor.Input[string, order]{{Topic: in, Key: codec.String(), Value: dec}},
		processor.HandlerFunc[string, order](func(_ context.Context, b *processor.Batch[string, order]) error {
			if err := sendAll(b, output); err != nil {
				return err
			}
			mu.Lock()
			for _, r := range b.Records {
				seen[r.Value.Seq]++
			}
			mu.Unlock()
			return nil
		}), processor.WithLogger(logger))
	require.NoError(t, err)
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx) }()

	time.Sleep(10*time.Second - time.Since(pausedAt))
	probe := harness.NewProbe(brokers, group, in, 2)
	during, err := probe.Committed()
	require.NoError(t, err)
	mu.Lock()
	handledDuring := len(seen)
	mu.Unlock()
	require.NoError(t, reg.Resume())
	resumed = true
	paused := time.Since(pausedAt)
	for p, off := range during {
		assert.Less(t, off, int64(0), "partition %d committed %d while the registry was paused", p, off)
	}
	assert.Zero(t, handledDuring, "nothing decodes while the registry is paused")

	time.Sleep(2 * time.Second) // load goes on after the outage
	close(stopLoad)
	<-loadDone
	n := produced.Load()
	require.Eventually(t, func() bool { return acked.Load()+failed.Load() == n }, 30*time.Second, 50*time.Millisecond, "delivery reports")
	require.Zero(t, failed.Load(), "input deliveries failed")

	ends := harness.EndOffsets(t, brokers, in, 2)
	committed, ok := probe.WaitCommitted(t, ends, 2*time.Minute, func() error {
		select {
		case err := <-runErr:
			runErr <- err
			return fmt.Errorf("Run returned early: %v", err)
		default:
			return nil
		}
	})
	stopRun()
	select {
	case err := <-runErr:
		assert.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("Run did not return within 1m of cancel")
	}
	require.True(t, ok, "committed %v never reached %v after the registry came back", committed, ends)

	mu.Lock()
	lost := 0
	for i := range n {
		if seen[i] == 0 {
			lost++
		}
	}
	mu.Unlock()
	dl := harness.ReadTopic(t, brokers, dlq, 2, 10*time.Second)
	t.Logf("registry-outage: records=%d paused=%s decode-retries=%d lost=%d dlq=%d", n, paused.Round(100*time.Millisecond), retries.Load(), lost, len(dl))
	assert.Zero(t, lost)
	for _, r := range dl[:min(len(dl), 3)] {
		for _, h := range r.Headers {
			if h.Key == processor.HeaderError {
				t.Errorf("dead-lettered during the outage: %s", h.Value)
			}
		}
	}
	assert.Positive(t, retries.Load(), "the processor retried while the registry was paused")
	assert.Equal(t, int(ends[0]+ends[1]), len(harness.ReadTopic(t, brokers, out, 2, time.Minute)), "one output per input (no batch was replayed)")
}

// countingHandler is a slog.Handler that counts records with a given message and
// discards everything.
type countingHandler struct {
	n   *atomic.Int64
	msg string
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }
