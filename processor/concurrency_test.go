package processor_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/state"
)

var seqOut = processor.NewOutput("out", codec.String(), codec.Int64())

// produceKeyed writes n records over keys (a key always to the same partition), each
// record's value its sequence number within its key, and returns the count per key.
func produceKeyed(t *testing.T, brokers, topic string, partitions, keys, n int) map[string]int64 {
	t.Helper()
	next := map[string]int64{}
	produceSeq(t, brokers, topic, partitions, keys, n, next)
	return next
}

// orderChecker is a handler that checks, per key, that records arrive in sequence
// (0, 1, 2, ... without gaps) and that calls for one key never overlap; it counts the
// calls running at once.
type orderChecker struct {
	mu       sync.Mutex
	next     map[string]int64
	busy     map[string]bool
	errs     []string
	running  atomic.Int32
	maxSeen  atomic.Int32
	delay    func() time.Duration
	overlaps int
}

func newOrderChecker(delay func() time.Duration) *orderChecker {
	return &orderChecker{next: map[string]int64{}, busy: map[string]bool{}, delay: delay}
}

func (c *orderChecker) Handle(ctx context.Context, b *processor.Batch[string, int64]) error {
	n := c.running.Add(1)
	defer c.running.Add(-1)
	for {
		m := c.maxSeen.Load()
		if n <= m || c.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	keys := map[string]bool{}
	c.mu.Lock()
	for _, r := range b.Records {
		if !keys[r.Key] && c.busy[r.Key] {
			c.overlaps++
		}
		keys[r.Key] = true
		c.busy[r.Key] = true
	}
	c.mu.Unlock()
	if c.delay != nil {
		time.Sleep(c.delay())
	}
	c.mu.Lock()
	for _, r := range b.Records {
		if r.Value != c.next[r.Key] && len(c.errs) < 10 {
			c.errs = append(c.errs, fmt.Sprintf("key %s: got %d, want %d (offset %d)", r.Key, r.Value, c.next[r.Key], r.Offset))
		}
		c.next[r.Key] = r.Value + 1
		delete(c.busy, r.Key)
	}
	c.mu.Unlock()
	for _, r := range b.Records {
		if err := seqOut.Send(b, r.Key, r.Value); err != nil {
			return err
		}
	}
	return nil
}

// checkOutputOrder reads out and checks every key's values arrive 0, 1, 2, ... want[key]-1.
func checkOutputOrder(t *testing.T, brokers string, want map[string]int64, total int) {
	t.Helper()
	out := consumeAll(t, brokers, "out", total, 60*time.Second)
	require.Len(t, out, total)
	next := map[string]int64{}
	bad := 0
	for _, m := range out {
		k := string(m.Key)
		v, err := codec.Int64().Decode(m.Value)
		require.NoError(t, err)
		if v != next[k] {
			bad++
			if bad < 5 {
				t.Errorf("output of key %s: got %d, want %d", k, v, next[k])
			}
		}
		next[k] = v + 1
	}
	assert.Equal(t, want, next, "every key's outputs, in order, none lost or repeated")
}

func TestConcurrencyKeepsKeyOrder(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 4}, embedded.Topic{Name: "out", Partitions: 4})
	const n = 20000
	want := produceKeyed(t, brokers, "in", 4, 300, n)

	h := newOrderChecker(func() time.Duration { return time.Duration(rand.IntN(2000)) * time.Microsecond })
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second},
		Group: "g", BatchSize: 200, BatchWait: 5 * time.Millisecond, Concurrency: 50},
		[]processor.Input[string, int64]{{Topic: "in", Key: codec.String(), Value: codec.Int64()}}, h)
	require.NoError(t, err)
	end := endOffsets(t, brokers, "in", 4)
	require.NoError(t, runUntil(t, p, func() bool { return equalOffsets(committed(t, brokers, "g", "in", 4), end) }))

	assert.Empty(t, h.errs, "records of a key reach the handler in offset order")
	assert.Zero(t, h.overlaps, "calls for one key never overlap")
	assert.Greater(t, h.maxSeen.Load(), int32(4), "units of a partition ran concurrently")
	assert.LessOrEqual(t, h.maxSeen.Load(), int32(4*50), "at most Concurrency calls per partition")
	checkOutputOrder(t, brokers, want, n)
}

func TestConcurrencyUnordered(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 2}, embedded.Topic{Name: "out", Partitions: 2})
	const n = 3000
	produceInts(t, brokers, "in", 2, n)
	var running, most atomic.Int32
	var calls atomic.Int64
	h := processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
		if len(b.Records) != 1 {
			return fmt.Errorf("unordered: %d records in one call", len(b.Records))
		}
		r := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); r > m && !most.CompareAndSwap(m, r); m = most.Load() {
		}
		calls.Add(1)
		time.Sleep(time.Millisecond)
		return doubler(ctx, b)
	})
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second},
		Group: "g", BatchSize: 100, BatchWait: 5 * time.Millisecond, Concurrency: 20, Ordering: processor.Unordered},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}}, h)
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool {
		c := committed(t, brokers, "g", "in", 2)
		return c[0] == n/2 && c[1] == n/2
	}))
	assert.EqualValues(t, n, calls.Load())
	assert.Greater(t, most.Load(), int32(2))
	out := consumeAll(t, brokers, "out", n, 30*time.Second)
	assert.Len(t, out, n)
}

// A key whose handler keeps failing is retried, then dead-lettered, record by record,
// while the other keys' records go through.
func TestConcurrencyErrorPolicyPerKey(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1}, embedded.Topic{Name: "dlq", Partitions: 1})
	const n = 2000
	want := produceKeyed(t, brokers, "in", 1, 40, n)
	poison := "key-00007"
	var poisonCalls atomic.Int64
	h := processor.HandlerFunc[string, int64](func(ctx context.Context, b *processor.Batch[string, int64]) error {
		for _, r := range b.Records {
			if r.Key == poison && r.Value%2 == 1 {
				poisonCalls.Add(1)
				return errors.New("poison")
			}
		}
		for _, r := range b.Records {
			if err := seqOut.Send(b, r.Key, r.Value); err != nil {
				return err
			}
		}
		return nil
	})
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second},
		Group: "g", BatchSize: 100, BatchWait: 5 * time.Millisecond, Concurrency: 10,
		ErrorPolicy: processor.Retry(2, processor.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}, processor.DeadLetter("dlq"))},
		[]processor.Input[string, int64]{{Topic: "in", Key: codec.String(), Value: codec.Int64()}}, h)
	require.NoError(t, err)
	end := endOffsets(t, brokers, "in", 1)
	require.NoError(t, runUntil(t, p, func() bool { return equalOffsets(committed(t, brokers, "g", "in", 1), end) }))

	dead := want[poison] / 2 // the odd sequence numbers of the poison key
	dl := consumeAll(t, brokers, "dlq", int(dead), 30*time.Second)
	require.Len(t, dl, int(dead))
	for _, m := range dl {
		assert.Equal(t, poison, string(m.Key))
		v, _ := codec.Int64().Decode(m.Value)
		assert.EqualValues(t, 1, v%2)
	}
	out := consumeAll(t, brokers, "out", n-int(dead), 30*time.Second)
	assert.Len(t, out, n-int(dead))
	for _, m := range out {
		v, _ := codec.Int64().Decode(m.Value)
		assert.False(t, string(m.Key) == poison && v%2 == 1, "a dead-lettered record sent no output")
	}
	assert.Greater(t, poisonCalls.Load(), dead, "retried before dead-lettering")
}

// Under Stop, a failing key stops the processor; the batches before the failing one are
// committed, the failing one is not.
func TestConcurrencyStopCommitsBeforeTheFailure(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1})
	produceKeyed(t, brokers, "in", 1, 20, 1000)
	var mu sync.Mutex
	var failedKey string
	var calls []processor.Record[string, int64] // each call's first record
	h := processor.HandlerFunc[string, int64](func(ctx context.Context, b *processor.Batch[string, int64]) error {
		mu.Lock()
		calls = append(calls, b.Records[0])
		mu.Unlock()
		for _, r := range b.Records {
			if r.Offset == 555 {
				mu.Lock()
				failedKey = r.Key
				mu.Unlock()
				time.Sleep(20 * time.Millisecond) // the key's next unit would have started by now
				return errors.New("boom")
			}
		}
		return nil
	})
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second},
		Group: "g", BatchSize: 100, BatchWait: 5 * time.Millisecond, Concurrency: 10},
		[]processor.Input[string, int64]{{Topic: "in", Key: codec.String(), Value: codec.Int64()}}, h)
	require.NoError(t, err)
	err = runUntil(t, p, func() bool { return false })
	var perr *processor.Error
	require.ErrorAs(t, err, &perr)
	assert.EqualValues(t, 555, perr.Offset)
	assert.Equal(t, processor.StageHandle, perr.Stage)
	c := committed(t, brokers, "g", "in", 1)[0]
	assert.LessOrEqual(t, c, int64(555), "nothing past the failing record is committed")
	assert.GreaterOrEqual(t, c, int64(555-100+1), "the batches before the failing one (at most 100 records) are committed")
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, failedKey)
	for _, r := range calls {
		assert.False(t, r.Key == failedKey && r.Offset > 555, "key %s handled at offset %d after its record at 555 failed", r.Key, r.Offset)
	}
}

func TestConcurrencyConfig(t *testing.T) {
	in := []processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}}
	_, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: "x:1"}, Group: "g", Concurrency: 8, ExactlyOnce: true}, in, processor.HandlerFunc[int64, int64](doubler))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Concurrency = 8 with ExactlyOnce")
	_, err = processor.New(processor.Config{Membership: processor.Membership{Brokers: "x:1"}, Group: "g", Concurrency: -1, Ordering: "keys"}, in, processor.HandlerFunc[int64, int64](doubler))
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "Concurrency = -1") && strings.Contains(err.Error(), `Ordering = "keys"`), err.Error())
	_, err = processor.New(processor.Config{Membership: processor.Membership{Brokers: "x:1"}, Group: "g", Concurrency: 8, ExactlyOnce: true, Ordering: processor.ByPartition}, in, processor.HandlerFunc[int64, int64](doubler))
	assert.NoError(t, err, "ByPartition keeps one batch at a time, so exactly-once applies")
	_, err = processor.New(processor.Config{Membership: processor.Membership{Brokers: "x:1"}, Group: "g", Concurrency: 8}, in,
		processor.HandlerFunc[int64, int64](doubler), processor.WithCheckpoint(state.NewMemoryTable[int64, int64]()))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Concurrency = 8 with WithCheckpoint")
}

func endOffsets(t *testing.T, brokers, topic string, partitions int) map[int32]int64 {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": "end-probe", "log_level": 3})
	require.NoError(t, err)
	defer c.Close()
	out := map[int32]int64{}
	for p := range int32(partitions) {
		_, hi, err := c.QueryWatermarkOffsets(topic, p, 10_000)
		require.NoError(t, err)
		out[p] = hi
	}
	return out
}

func equalOffsets(got, want map[int32]int64) bool {
	for p, w := range want {
		if got[p] != w {
			return false
		}
	}
	return true
}

// Spans of a batch handled in units: one process span per batch, ended whether or not
// a unit had outputs; one send span per batch with outputs; every output carries it.
func TestConcurrencyTracing(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1})
	produceKeyed(t, brokers, "in", 1, 20, 200)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	h := processor.HandlerFunc[string, int64](func(ctx context.Context, b *processor.Batch[string, int64]) error {
		for _, r := range b.Records {
			if r.Offset >= 100 { // the first 100 records send nothing
				if err := seqOut.Send(b, r.Key, r.Value); err != nil {
					return err
				}
			}
		}
		return nil
	})
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second},
		Group: "g", BatchSize: 100, BatchWait: 5 * time.Millisecond, Concurrency: 10},
		[]processor.Input[string, int64]{{Topic: "in", Key: codec.String(), Value: codec.Int64()}}, h, processor.WithTracerProvider(tp))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool { return committed(t, brokers, "g", "in", 1)[0] == 200 }))

	count := map[string]int{}
	sends := map[trace.SpanID]bool{}
	for _, s := range spans.Ended() {
		count[s.Name()]++
		if s.Name() == "send" {
			sends[s.SpanContext().SpanID()] = true
		}
	}
	assert.Equal(t, count["process in"], count["commit in"], "every batch's process span ended: %v", count)
	assert.Positive(t, count["send"])
	assert.Less(t, count["send"], count["process in"], "batches without outputs have no send span")
	for _, m := range consumeAll(t, brokers, "out", 100, 30*time.Second) {
		var parent string
		for _, h := range m.Headers {
			if h.Key == "traceparent" {
				parent = string(h.Value)
			}
		}
		require.Len(t, parent, 55, "every output carries a traceparent")
		id, err := trace.SpanIDFromHex(parent[36:52])
		require.NoError(t, err)
		assert.True(t, sends[id], "an output's parent is its batch's send span")
	}
}
