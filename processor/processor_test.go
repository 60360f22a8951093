package processor_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/internal/testwait"
	"github.com/samsa-go/samsa/processor"
)

// These tests run on the embedded broker: fast, no setup. The same behaviour is checked
// against real Kafka in integration/.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// librdkafka's cgo callbacks park goroutines in the runtime briefly after Close.
		goleak.IgnoreTopFunction("github.com/confluentinc/confluent-kafka-go/v2/kafka.(*handle).cleanup"),
	)
}

func startBroker(t *testing.T, topics ...embedded.Topic) string {
	t.Helper()
	b, err := embedded.Start(topics...)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b.Bootstrap()
}

func produceInts(t *testing.T, brokers, topic string, partitions, n int) {
	t.Helper()
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	require.NoError(t, err)
	defer p.Close()
	dr := make(chan kafka.Event, n)
	for i := range n {
		k := binary.BigEndian.AppendUint64(nil, uint64(i))
		require.NoError(t, p.Produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(i % partitions)},
			Key:            k, Value: k,
		}, dr))
	}
	for range n {
		select {
		case ev := <-dr:
			require.NoError(t, ev.(*kafka.Message).TopicPartition.Error)
		case <-time.After(30 * time.Second):
			t.Fatal("delivery timeout")
		}
	}
}

func produceRaw(t *testing.T, brokers, topic string, partition int32, key, value []byte) {
	t.Helper()
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	require.NoError(t, err)
	defer p.Close()
	dr := make(chan kafka.Event, 1)
	require.NoError(t, p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: partition}, Key: key, Value: value}, dr))
	require.NoError(t, (<-dr).(*kafka.Message).TopicPartition.Error)
}

// consumeAll reads topic from the beginning until want records arrived or timeout.
func consumeAll(t *testing.T, brokers, topic string, want int, timeout time.Duration) []*kafka.Message {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": fmt.Sprintf("reader-%d", time.Now().UnixNano()),
		"auto.offset.reset": "earliest", "enable.auto.commit": false, "log_level": 3})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Subscribe(topic, nil))
	var got []*kafka.Message
	deadline := time.Now().Add(timeout)
	for len(got) < want && time.Now().Before(deadline) {
		if m, ok := c.Poll(100).(*kafka.Message); ok && m.TopicPartition.Error == nil {
			got = append(got, m)
		}
	}
	return got
}

func committed(t *testing.T, brokers, group, topic string, partitions int) map[int32]int64 {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": group, "log_level": 3})
	require.NoError(t, err)
	defer c.Close()
	tps := make([]kafka.TopicPartition, partitions)
	for p := range partitions {
		tps[p] = kafka.TopicPartition{Topic: &topic, Partition: int32(p)}
	}
	res, err := c.Committed(tps, 10_000)
	out := map[int32]int64{}
	var kerr kafka.Error
	if errors.As(err, &kerr) && kerr.Code() == kafka.ErrGroupIDNotFound {
		return out // the embedded broker's answer before the group's first commit
	}
	require.NoError(t, err)
	for _, tp := range res {
		out[tp.Partition] = int64(tp.Offset)
	}
	return out
}

var doubled = processor.NewOutput("out", codec.Int64(), codec.Int64())

func doubler(_ context.Context, b *processor.Batch[int64, int64]) error {
	for _, r := range b.Records {
		if err := doubled.Send(b, r.Key, 2*r.Value); err != nil {
			return err
		}
	}
	return nil
}

// runUntil runs p until cond holds (then stops it) or Run returns, at most 60 s, and
// returns what Run returned.
func runUntil(t *testing.T, p interface{ Run(context.Context) error }, cond func() bool) error {
	t.Helper()
	return runWithin(t, 60*time.Second, "the condition", p, cond)
}

// runWithin is runUntil with the bound d and what cond stands for. Run is stopped and
// waited for also when the wait fails the test.
func runWithin(t *testing.T, d time.Duration, what string, p interface{ Run(context.Context) error }, cond func() bool) (err error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	returned := false
	defer func() {
		cancel()
		if !returned {
			err = <-errc
		}
	}()
	testwait.For(t, d, what+", or Run returning", func() bool {
		select {
		case err = <-errc:
			returned = true
			return true
		default:
			return cond()
		}
	})
	return err
}

func TestDoublesAndCommitsAfterAck(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 4}, embedded.Topic{Name: "out", Partitions: 4})
	const n = 2000
	produceInts(t, brokers, "in", 4, n)

	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "g", BatchSize: 100, BatchWait: 10 * time.Millisecond},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](doubler))
	require.NoError(t, err)

	require.NoError(t, runUntil(t, p, func() bool {
		c := committed(t, brokers, "g", "in", 4)
		return c[0] == n/4 && c[1] == n/4 && c[2] == n/4 && c[3] == n/4
	}))

	out := consumeAll(t, brokers, "out", n, 30*time.Second)
	require.Len(t, out, n)
	seen := map[int64]bool{}
	for _, m := range out {
		k := int64(binary.BigEndian.Uint64(m.Key))
		v := int64(binary.BigEndian.Uint64(m.Value))
		assert.Equal(t, 2*k, v)
		seen[k] = true
	}
	assert.Len(t, seen, n)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "Close is idempotent")
	assert.ErrorIs(t, p.Run(context.Background()), processor.ErrClosed)
}

func TestStopPolicyReturnsTypedErrorAndCommitsNothingOfTheBatch(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1})
	produceInts(t, brokers, "in", 1, 10)
	produceRaw(t, brokers, "in", 0, []byte("bad-key"), []byte{1, 2, 3}) // offset 10: undecodable
	produceInts(t, brokers, "in", 1, 5)

	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "g", BatchSize: 4, BatchWait: time.Millisecond},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](doubler))
	require.NoError(t, err)
	err = runUntil(t, p, func() bool { return false })
	var perr *processor.Error
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, processor.StageDecode, perr.Stage)
	assert.Equal(t, "in", perr.Topic)
	assert.EqualValues(t, 0, perr.Partition)
	assert.EqualValues(t, 10, perr.Offset)
	var derr *codec.DecodeError
	assert.ErrorAs(t, err, &derr)
	// Batches before the failing one (offsets 0-7) are committed; the failing batch (8-11) is not.
	assert.EqualValues(t, 8, committed(t, brokers, "g", "in", 1)[0])
}

func TestDeadLetterPoisonRecords(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 2}, embedded.Topic{Name: "out", Partitions: 2}, embedded.Topic{Name: "dlq", Partitions: 1})
	produceInts(t, brokers, "in", 2, 100)
	produceRaw(t, brokers, "in", 1, []byte("key-1234"), []byte("not-an-int64"))
	produceInts(t, brokers, "in", 2, 100)

	var mu sync.Mutex
	handled := 0
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "g", BatchSize: 50, BatchWait: 5 * time.Millisecond, ErrorPolicy: processor.DeadLetter("dlq")},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
			mu.Lock()
			handled += len(b.Records)
			mu.Unlock()
			return doubler(ctx, b)
		}))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool {
		c := committed(t, brokers, "g", "in", 2)
		return c[0] == 100 && c[1] == 101
	}))
	assert.Equal(t, 200, handled)
	dlq := consumeAll(t, brokers, "dlq", 1, 20*time.Second)
	require.Len(t, dlq, 1)
	h := map[string]string{}
	for _, x := range dlq[0].Headers {
		h[x.Key] = string(x.Value)
	}
	assert.Equal(t, "not-an-int64", string(dlq[0].Value))
	assert.Equal(t, "key-1234", string(dlq[0].Key))
	assert.Equal(t, "decode", h[processor.HeaderStage])
	assert.Equal(t, "in", h[processor.HeaderSourceTopic])
	assert.Equal(t, "1", h[processor.HeaderSourcePartition])
	assert.Equal(t, "50", h[processor.HeaderSourceOffset])
	assert.Equal(t, "g", h[processor.HeaderGroup])
	assert.Contains(t, h[processor.HeaderError], "value: codec: int64: want 8 bytes, got 12")
	assert.NotContains(t, h[processor.HeaderError], "not-an-int64", "the error must not quote the payload")
}

func TestHandlerPanicIsolatedAndDeadLettered(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1}, embedded.Topic{Name: "dlq", Partitions: 1})
	produceInts(t, brokers, "in", 1, 30)
	var mu sync.Mutex
	calls := 0
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "g", BatchSize: 10, BatchWait: 5 * time.Millisecond, ErrorPolicy: processor.Retry(2, processor.Backoff{Initial: time.Millisecond}, processor.DeadLetter("dlq"))},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
			mu.Lock()
			calls++
			mu.Unlock()
			for _, r := range b.Records {
				if r.Value == 13 {
					panic("thirteen")
				}
				if r.Value == 17 {
					return errors.New("seventeen")
				}
			}
			return doubler(ctx, b)
		}))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool { return committed(t, brokers, "g", "in", 1)[0] == 30 }))
	dlq := consumeAll(t, brokers, "dlq", 2, 20*time.Second)
	require.Len(t, dlq, 2)
	// The panic's dead letter names the functions and files, not this machine's paths.
	_, file, _, _ := runtime.Caller(0)
	var panicked string
	for _, m := range dlq {
		for _, x := range m.Headers {
			if x.Key == processor.HeaderError && strings.Contains(string(x.Value), "panicked") {
				panicked = string(x.Value)
			}
		}
	}
	t.Logf("the panic's dead letter says:\n%s", panicked)
	assert.True(t, strings.HasPrefix(panicked, "handler panicked: thirteen\n"), "%q", panicked)
	assert.Contains(t, panicked, "processor_test.TestHandlerPanicIsolatedAndDeadLettered.func1 (processor_test.go:")
	assert.NotContains(t, panicked, filepath.Dir(file), "no directory of the build machine")
	assert.NotContains(t, panicked, "debug.Stack", "the recovery's own calls are left out")
	assert.NotContains(t, panicked, "+0x", "no program counters")
	out := consumeAll(t, brokers, "out", 28, 20*time.Second)
	assert.Len(t, out, 28, "every other record is processed exactly once here (no crash)")
	// Batch 10-19 fails 3 times (1 + 2 retries), then its 10 records run alone.
	assert.Equal(t, 1+3+10+1, calls)
}

func TestConfigErrorsListEveryProblem(t *testing.T) {
	_, err := processor.New(processor.Config{
		Membership:        processor.Membership{StopTimeout: 10 * time.Minute, Protocol: "sticky"},
		BatchSize:         -1,
		ConsumerOverrides: map[string]any{"enable.auto.commit": true},
		ProducerOverrides: map[string]any{"acks": "1"},
		ErrorPolicy:       processor.DeadLetter(""),
	}, []processor.Input[int64, int64]{{Topic: "a"}}, processor.HandlerFunc[int64, int64](doubler))
	require.Error(t, err)
	var cerr *processor.ConfigError
	require.ErrorAs(t, err, &cerr)
	for _, want := range []string{
		"Brokers is required",
		"Group is required",
		"BatchSize = -1",
		"StopTimeout (10m0s) must be below MaxPollInterval (5m0s)",
		`Protocol "sticky"`,
		`ConsumerOverrides["enable.auto.commit"]: the framework owns this setting`,
		`ProducerOverrides["acks"]: the framework owns this setting`,
		"DeadLetter needs a topic",
		`inputs[0] ("a"): Key and Value decoders are required`,
	} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestCoPartitioningCheckedAtStart(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "a", Partitions: 8}, embedded.Topic{Name: "b", Partitions: 12})
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: "g"},
		[]processor.Input[int64, int64]{{Topic: "a", Key: codec.Int64(), Value: codec.Int64()}, {Topic: "b", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](doubler))
	require.NoError(t, err)
	err = p.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `input topics "a" (8 partitions), "b" (12 partitions) are not co-partitioned`)

	p, err = processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: "g"},
		[]processor.Input[int64, int64]{{Topic: "missing", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](doubler))
	require.NoError(t, err)
	assert.ErrorContains(t, p.Run(context.Background()), `topic does not exist: "missing"`)
}

type fixedCheckpoint map[int32]int64

func (c fixedCheckpoint) Applied(_ context.Context, _ string, p int32) (int64, error) {
	return c[p], nil
}

func TestCheckpointSkipsAppliedRecords(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 2}, embedded.Topic{Name: "out", Partitions: 2})
	produceInts(t, brokers, "in", 2, 20) // 10 per partition
	var mu sync.Mutex
	var seen []int64
	var next []map[string]int64
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "g", BatchSize: 100, BatchWait: 20 * time.Millisecond},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range b.Records {
				seen = append(seen, int64(r.Partition)*100+r.Offset)
			}
			next = append(next, b.NextOffsets())
			return nil
		}), processor.WithCheckpoint(fixedCheckpoint{0: 6, 1: 10}))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool {
		c := committed(t, brokers, "g", "in", 2)
		return c[0] == 10 && c[1] == 10
	}))
	mu.Lock()
	defer mu.Unlock()
	assert.ElementsMatch(t, []int64{6, 7, 8, 9}, seen, "only partition 0's offsets 6-9 are unapplied")
	assert.Contains(t, next, map[string]int64{"in": 10})
}

// TestShutdownEndsRetryBackoff: cancelling Run's context while a failing batch waits out
// a Retry backoff ends the wait at once; the batch is left uncommitted for the next owner.
func TestShutdownEndsRetryBackoff(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1})
	produceInts(t, brokers, "in", 1, 3)
	failed := make(chan struct{}, 1)
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second, StopTimeout: time.Minute}, Group: "g", BatchWait: time.Millisecond, ErrorPolicy: processor.Retry(3, processor.Backoff{Initial: time.Hour, Max: time.Hour}, processor.Stop())},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(context.Context, *processor.Batch[int64, int64]) error {
			select {
			case failed <- struct{}{}:
			default:
			}
			return errors.New("downstream unavailable")
		}))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-failed:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler was never called")
	}
	time.Sleep(100 * time.Millisecond) // checks that nothing happens: Run waits in the hour-long backoff
	require.Empty(t, done, "Run returned during the retry backoff")
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "a clean stop, not the retried batch's failure")
	case <-time.After(20 * time.Second): // far below the backoff and the StopTimeout of a minute
		t.Fatal("Run waited out the retry backoff after its context was cancelled")
	}
	assert.Less(t, committed(t, brokers, "g", "in", 1)[0], int64(0), "the failing batch is not committed")
}

// TestNullKeysStayNull: a string pass-through keeps a null key null (SendNullKey) and an
// empty key empty; the two are different records on the wire.
func TestNullKeysStayNull(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1})
	produceRaw(t, brokers, "in", 0, nil, []byte("keyless"))
	produceRaw(t, brokers, "in", 0, []byte{}, []byte("empty key"))
	produceRaw(t, brokers, "in", 0, []byte("k"), []byte("keyed"))
	out := processor.NewOutput("out", codec.String(), codec.String())
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "g", BatchWait: time.Millisecond},
		[]processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
		processor.HandlerFunc[string, string](func(_ context.Context, b *processor.Batch[string, string]) error {
			for _, r := range b.Records {
				var err error
				if r.NullKey {
					err = out.SendNullKey(b, r.Value)
				} else {
					err = out.Send(b, r.Key, r.Value)
				}
				if err != nil {
					return err
				}
			}
			return nil
		}))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool { return committed(t, brokers, "g", "in", 1)[0] == 3 }))
	got := consumeAll(t, brokers, "out", 3, 30*time.Second)
	require.Len(t, got, 3)
	byValue := map[string][]byte{}
	for _, m := range got {
		byValue[string(m.Value)] = m.Key
	}
	assert.Nil(t, byValue["keyless"], "a null key stays null")
	assert.NotNil(t, byValue["empty key"], "an empty key stays an empty key, not null")
	assert.Empty(t, byValue["empty key"])
	assert.Equal(t, []byte("k"), byValue["keyed"])
}

// TestUnreachableBrokerFailsWithinStartTimeout: with nothing listening at the bootstrap
// address, Run fails once StartTimeout has passed, naming the address and the cause.
func TestUnreachableBrokerFailsWithinStartTimeout(t *testing.T) {
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: "127.0.0.1:1"}, Group: "g", StartTimeout: 2 * time.Second},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](doubler))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second): // the old fixed bound; StartTimeout is 2 s
		t.Fatal("Run did not fail within its start timeout")
	}
	require.Error(t, err)
	t.Log(err)
	assert.ErrorContains(t, err, "127.0.0.1:1", "the error names the address")
	assert.ErrorContains(t, err, "connection refused", "the error says what a connection to it says")
	assert.Regexp(t, `within (2|1\.9)s `, err.Error(), "the error says how long it waited: the 2 s start timeout")
}

// TestProduceFailureNamesTheOutputTopic: an output the client refuses (larger than
// message.max.bytes) stops the processor with an error naming the output topic, not
// only the input record.
func TestProduceFailureNamesTheOutputTopic(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "big-out", Partitions: 1})
	produceInts(t, brokers, "in", 1, 1)
	out := processor.NewOutput("big-out", codec.Int64(), codec.Bytes())
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "g", BatchWait: time.Millisecond},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(_ context.Context, b *processor.Batch[int64, int64]) error {
			for _, r := range b.Records {
				if err := out.Send(b, r.Key, make([]byte, 2<<20)); err != nil {
					return err
				}
			}
			return nil
		}))
	require.NoError(t, err)
	err = runUntil(t, p, func() bool { return false })
	var perr *processor.Error
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, processor.StageProduce, perr.Stage)
	assert.ErrorContains(t, err, "big-out")
}
