package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/testwait"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/state"
)

// TestMain stops what the stack helpers started, then checks that no goroutine of the
// command or the clients it made outlived the tests.
func TestMain(m *testing.M) {
	code := stack.RunTests(m)
	if code == 0 {
		if err := goleak.Find(
			// librdkafka's cgo callbacks park goroutines in the runtime briefly after Close.
			goleak.IgnoreTopFunction("github.com/confluentinc/confluent-kafka-go/v2/kafka.(*handle).cleanup"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// realStack returns the brokers and Redis of the real stack ($KAFKA_BROKERS and
// $REDIS_ADDR, or started once for this binary). In -short mode the test is skipped.
func realStack(t *testing.T) (brokers, redisAddr string) {
	t.Helper()
	if testing.Short() {
		t.Skip("short mode: the samsa command is tested against a real Kafka and Redis (started from integration/stack, or $KAFKA_BROKERS and $REDIS_ADDR)")
	}
	return stack.KafkaBrokers(t), stack.RedisAddr(t)
}

// samsa runs the command in-process and returns its output and exit code.
func samsa(t *testing.T, brokers string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{}, args...)
	if brokers != "" && len(full) > 0 {
		// -brokers goes after the (sub)command words.
		i := 1
		if full[0] == "dlq" || full[0] == "replay" || full[0] == "table" {
			i = 2
		}
		full = append(append(append([]string{}, full[:i]...), "-brokers", brokers), full[i:]...)
	}
	code = run(ctx, full, &out, &errb)
	t.Logf("samsa %s -> %d\n%s%s", strings.Join(full, " "), code, out.String(), errb.String())
	return out.String(), errb.String(), code
}

// requireOneLine checks a refusal: exit code, a single stderr line containing want.
func requireOneLine(t *testing.T, code int, stderr string, wantCode int, want string) {
	t.Helper()
	require.Equal(t, wantCode, code, "exit code; stderr: %s", stderr)
	require.Equal(t, 1, strings.Count(stderr, "\n"), "one line on stderr: %q", stderr)
	require.Contains(t, stderr, want)
}

func dial(t *testing.T, brokers string) *admin.Client {
	t.Helper()
	ac, err := admin.Dial(brokers, nil, nil)
	require.NoError(t, err)
	t.Cleanup(ac.Close)
	return ac
}

func createTopic(t *testing.T, brokers, topic string, partitions int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := dial(t, brokers).EnsureTopic(ctx, topic, partitions, 1)
	require.NoError(t, err)
	require.Equal(t, partitions, n)
}

// produceAll produces msgs and waits for every acknowledgement.
func produceAll(t *testing.T, brokers string, msgs []*record.Message) {
	t.Helper()
	p, err := produce.New(produce.Config{Brokers: brokers, Defaults: map[string]any{"partitioner": "murmur2_random", "log_level": 3}})
	require.NoError(t, err)
	defer p.Close(10 * time.Second)
	acks := make(chan error, len(msgs))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.ProduceBatch(ctx, msgs, ackFunc(func(_ *record.Message, err error) { acks <- err }))
	for range msgs {
		select {
		case err := <-acks:
			require.NoError(t, err)
		case <-ctx.Done():
			t.Fatal("produce: acknowledgements did not come within 30s")
		}
	}
}

// committed returns the group's committed offsets. Waits call it again and again, so
// it closes its client before returning.
func committed(t *testing.T, brokers, group string) map[record.TopicPartition]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ac, err := admin.Dial(brokers, nil, nil)
	require.NoError(t, err)
	defer ac.Close()
	c, err := ac.Committed(ctx, group)
	require.NoError(t, err)
	return c
}

// endOffsets returns the end offset of every partition of topic; like committed, it
// closes its client before returning.
func endOffsets(t *testing.T, brokers, topic string) map[record.TopicPartition]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ac, err := admin.Dial(brokers, nil, nil)
	require.NoError(t, err)
	defer ac.Close()
	tps, err := ac.Partitions(ctx, topic)
	require.NoError(t, err)
	ends, err := ac.ListOffsets(ctx, tps, admin.Latest)
	require.NoError(t, err)
	return ends
}

// running is a processor started in the background.
type running struct {
	stop func() error
}

// startProcessor runs p until stopped; stop returns Run's error.
func startProcessor[K, V any](t *testing.T, p *processor.Processor[K, V]) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(45 * time.Second):
				err = errors.New("processor did not stop within 45s")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return &running{stop: stop}
}

// testConfig is a processor config with quick timings for tests.
func testConfig(brokers, group, clientID string) processor.Config {
	return processor.Config{
		Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second, StopTimeout: 5 * time.Second, Overrides: map[string]any{"client.id": clientID}}, Group: group, BatchWait: 10 * time.Millisecond, CommitInterval: 100 * time.Millisecond, StartTimeout: 15 * time.Second,
	}
}

// waitCommitted waits until the group committed want on every partition of topic.
func waitCommitted(t *testing.T, brokers, group, topic string, want map[record.TopicPartition]int64) {
	t.Helper()
	testwait.ForNoError(t, 30*time.Second, fmt.Sprintf("group %s commits %v", group, want), func() error {
		got := committed(t, brokers, group)
		for tp, off := range want {
			if tp.Topic == topic && got[tp] != off {
				return fmt.Errorf("committed %v", got)
			}
		}
		return nil
	})
}

// summer keeps, in a state.Table, the sum of each key's values and how many of its
// records were applied; each batch's effects are applied with its offsets.
type summer struct {
	table *state.Table[string, int64]
	out   processor.Output[string, int64]
}

func (s *summer) Handle(ctx context.Context, b *processor.Batch[string, int64]) error {
	sums := map[string]int64{}
	var keys []string
	for _, r := range b.Records {
		if _, ok := sums["sum/"+r.Key]; !ok {
			keys = append(keys, "sum/"+r.Key, "cnt/"+r.Key)
			sums["sum/"+r.Key], sums["cnt/"+r.Key] = 0, 0
		}
	}
	vals, found, err := s.table.Partition(b.Partition).GetMany(ctx, keys)
	if err != nil {
		return err
	}
	for i, k := range keys {
		if found[i] {
			sums[k] = vals[i]
		}
	}
	for _, r := range b.Records {
		sums["sum/"+r.Key] += r.Value
		sums["cnt/"+r.Key]++
		if s.out.Topic() != "" {
			if err := s.out.Send(b, r.Key, sums["sum/"+r.Key]); err != nil {
				return err
			}
		}
	}
	puts := make([]state.Entry[string, int64], 0, len(keys))
	for _, k := range keys {
		puts = append(puts, state.Entry[string, int64]{Key: k, Value: sums[k]})
	}
	err = s.table.Apply(ctx, b.Partition, puts, nil, b.NextOffsets())
	if errors.Is(err, state.ErrAlreadyApplied) {
		return nil
	}
	return err
}

func newTable(t *testing.T, redisAddr, ns string) (*state.Table[string, int64], redis.UniversalClient) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rc.Close() })
	tbl, err := state.NewTable(rc, ns, codec.String(), codec.Int64())
	require.NoError(t, err)
	t.Cleanup(func() {
		ta, _ := state.NewTableAdmin(rc, ns)
		parts, _ := ta.Partitions(context.Background())
		for _, p := range parts {
			_, _ = ta.ClearPartition(context.Background(), p)
		}
	})
	return tbl, rc
}

func int64Msg(topic string, partition int32, key string, v int64, ts time.Time) *record.Message {
	b, _ := codec.Int64().Encode(v)
	return &record.Message{Topic: topic, Partition: partition, Key: []byte(key), Value: b, Timestamp: ts}
}

func sumInputs(topic string) []processor.Input[string, int64] {
	return []processor.Input[string, int64]{{Topic: topic, Key: codec.String(), Value: codec.Int64()}}
}
