package processor_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/internal/testlog"
	"github.com/samsa-go/samsa/processor"
)

// readCommitted reads topic from the beginning with isolation.level=read_committed until
// idle for a second after want records (or timeout).
func readCommitted(t *testing.T, brokers, topic string, want int, timeout time.Duration) []*kafka.Message {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": fmt.Sprintf("rc-%d", time.Now().UnixNano()),
		"auto.offset.reset": "earliest", "enable.auto.commit": false, "isolation.level": "read_committed", "log_level": 3})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Subscribe(topic, nil))
	var got []*kafka.Message
	deadline := time.Now().Add(timeout)
	idleSince := time.Now()
	for time.Now().Before(deadline) && (len(got) < want || time.Since(idleSince) < time.Second) {
		if m, ok := c.Poll(100).(*kafka.Message); ok && m.TopicPartition.Error == nil {
			got = append(got, m)
			idleSince = time.Now()
		}
	}
	return got
}

func TestExactlyOnceCommitsOutputsAndOffsetsTogether(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 2}, embedded.Topic{Name: "out", Partitions: 2})
	const n = 600
	produceInts(t, brokers, "in", 2, n)
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "eos", BatchSize: 50, BatchWait: 5 * time.Millisecond, CommitInterval: 50 * time.Millisecond, ExactlyOnce: true},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](doubler))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool {
		c := committed(t, brokers, "eos", "in", 2)
		return c[0] == n/2 && c[1] == n/2
	}))
	out := readCommitted(t, brokers, "out", n, 30*time.Second)
	seen := map[int64]int{}
	for _, m := range out {
		k := int64(binary.BigEndian.Uint64(m.Key))
		assert.Equal(t, 2*k, int64(binary.BigEndian.Uint64(m.Value)))
		seen[k]++
	}
	assert.Len(t, seen, n)
	for k, c := range seen {
		assert.Equal(t, 1, c, "key %d seen %d times under read_committed", k, c)
	}
}

func TestExactlyOnceConfig(t *testing.T) {
	_, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: "x"}, Group: "g", TransactionalID: "t", ConsumerOverrides: map[string]any{}},
		[]processor.Input[int64, int64]{{Topic: "a", Key: codec.Int64(), Value: codec.Int64()}}, processor.HandlerFunc[int64, int64](doubler))
	require.ErrorContains(t, err, "apply only with ExactlyOnce")
	_, err = processor.New(processor.Config{Membership: processor.Membership{Brokers: "x"}, Group: "g", ExactlyOnce: true, ConsumerOverrides: map[string]any{"isolation.level": "read_uncommitted"}},
		[]processor.Input[int64, int64]{{Topic: "a", Key: codec.Int64(), Value: codec.Int64()}}, processor.HandlerFunc[int64, int64](doubler))
	require.ErrorContains(t, err, "exactly-once mode reads read_committed")
	_ = context.Background
}

// TestExactlyOnceRefusedOutputNeverCommitsItsInput: an output the client refuses (larger
// than message.max.bytes) must abort the transaction instead of committing its input's
// offset without it; the same work keeps aborting, so Run stops with a clear error.
func TestExactlyOnceRefusedOutputNeverCommitsItsInput(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1})
	produceInts(t, brokers, "in", 1, 10)
	out := processor.NewOutput("out", codec.Int64(), codec.Bytes())
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "eos-big", BatchSize: 100, BatchWait: 5 * time.Millisecond, CommitInterval: 50 * time.Millisecond, ExactlyOnce: true},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
			for _, r := range b.Records {
				v := []byte("small")
				if r.Value == 5 {
					v = make([]byte, 2<<20)
				}
				if err := out.Send(b, r.Key, v); err != nil {
					return err
				}
			}
			return nil
		}))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = p.Run(ctx)
	require.ErrorContains(t, err, "consecutive transactions aborted")
	assert.Empty(t, readCommitted(t, brokers, "out", 1, 3*time.Second), "nothing of the refused batch is visible")
	c := committed(t, brokers, "eos-big", "in", 1)
	assert.NotEqual(t, int64(10), c[0], "the input offset was not committed without its outputs")
}

// TestExactlyOnceReplacesFencedProducer: another producer registers the processor's
// transactional id mid-run (as the coordinator does when it aborts a transaction that
// outlived its timeout, the old epoch is dead). The processor replaces its producer,
// rewinds the open transaction's partitions and finishes with every output exactly once.
func TestExactlyOnceReplacesFencedProducer(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 2}, embedded.Topic{Name: "out", Partitions: 2})
	const n = 4000
	produceInts(t, brokers, "in", 2, n)
	var logs testlog.Buffer
	// Records of the second half wait until the intruder has registered the id, so the
	// fence lands mid-run whatever the machine's speed.
	registered := make(chan struct{})
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "eos-fence", TransactionalID: "eos-fence-txn", BatchSize: 20, BatchWait: 5 * time.Millisecond, CommitInterval: 50 * time.Millisecond, ExactlyOnce: true},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
			if b.Records[len(b.Records)-1].Value >= n/2 {
				select {
				case <-registered:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return doubler(ctx, b)
		}), processor.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.NoError(t, err)

	// Once the processor committed (its producer holds the id), an intruder registers it.
	intruded := false
	require.NoError(t, runUntil(t, p, func() bool {
		c := committed(t, brokers, "eos-fence", "in", 2)
		if c[0]+c[1] > 0 && !intruded {
			intruded = true
			require.NoError(t, registerID(brokers, "eos-fence-txn"), "the intruding producer registered the transactional id")
			close(registered)
		}
		return c[0] == n/2 && c[1] == n/2
	}))
	require.Contains(t, logs.String(), "producer fenced; replacing it", "the processor saw the fence")

	assertEachKeyOnce(t, brokers, "out", n)
}

// TestExactlyOnceCommitTimeoutResumed: the coordinator answers no commit for longer than
// four calls' bounds (TransactionTimeout each), so commit_transaction times out again and
// again. A timed-out call goes on inside librdkafka, which refuses
// every other transactional call ("Conflicting commit_transaction API call is already
// in progress") until the same call is made again: giving up the commit for an abort
// would wedge the processor for good. It must resume the commit, learn its outcome
// (here the coordinator aborted the transaction at its timeout) and go on: every output
// exactly once, every offset committed.
func TestExactlyOnceCommitTimeoutResumed(t *testing.T) {
	b, err := embedded.Start(embedded.Topic{Name: "in", Partitions: 2}, embedded.Topic{Name: "out", Partitions: 2})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	brokers := b.Bootstrap()
	const n = 600
	produceInts(t, brokers, "in", 2, n)

	// From the first commit on, for hold, the coordinator answers no EndTxn commit (each
	// waits until hold ends): the commit and librdkafka's own retries of its request all
	// time out, for longer than four calls' bounds (TransactionTimeout and backoff each).
	const hold = 6 * time.Second
	var until atomic.Int64 // unix nanoseconds; 0 until the first commit
	c := b.Cluster()
	c.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !req.(*kmsg.EndTxnRequest).Commit {
			return nil, nil, false
		}
		until.CompareAndSwap(0, time.Now().Add(hold).UnixNano())
		if d := time.Until(time.Unix(0, until.Load())); d > 0 {
			c.SleepControl(func() { time.Sleep(d) })
		}
		return nil, nil, false
	})

	var logs testlog.Buffer
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second},
		Group: "eos-resume", BatchSize: 50, BatchWait: 5 * time.Millisecond, CommitInterval: 50 * time.Millisecond,
		ExactlyOnce: true, TransactionTimeout: time.Second},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](doubler), processor.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool {
		c := committed(t, brokers, "eos-resume", "in", 2)
		return c[0] == n/2 && c[1] == n/2
	}))
	require.NotZero(t, until.Load(), "a commit was held")
	assert.Contains(t, logs.String(), `op="commit transaction"`, "the held commit timed out and was retried")
	assert.NotContains(t, logs.String(), "Conflicting", "no other transactional call was made while the commit was unresolved")

	assertEachKeyOnce(t, brokers, "out", n)
}

// assertEachKeyOnce reads topic read_committed and checks that it holds n distinct keys,
// each once.
func assertEachKeyOnce(t *testing.T, brokers, topic string, n int) {
	t.Helper()
	seen := map[int64]int{}
	for _, m := range readCommitted(t, brokers, topic, n, 30*time.Second) {
		seen[int64(binary.BigEndian.Uint64(m.Key))]++
	}
	assert.Len(t, seen, n)
	for k, c := range seen {
		assert.Equal(t, 1, c, "key %d seen %d times under read_committed", k, c)
	}
}

// registerID registers transactional id as a new producer would, fencing the producer
// that held it.
func registerID(brokers, id string) error {
	intruder, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "transactional.id": id, "log_level": 3})
	if err != nil {
		return err
	}
	defer intruder.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return intruder.InitTransactions(ctx)
}
