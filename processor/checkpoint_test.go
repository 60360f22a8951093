package processor_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
	"github.com/samsa-go/samsa/state"
)

// counter counts records per key in a table, applying each batch with its offsets.
func counter(tbl *state.Table[string, int64]) processor.Handler[string, string] {
	return processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
		counts := map[string]int64{}
		for _, r := range b.Records {
			counts[r.Key]++
		}
		keys := make([]string, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		old, _, err := tbl.Partition(b.Partition).GetMany(ctx, keys)
		if err != nil {
			return err
		}
		puts := make([]state.Entry[string, int64], len(keys))
		for i, k := range keys {
			puts[i] = state.Entry[string, int64]{Key: k, Value: old[i] + counts[k]}
		}
		if err := tbl.Apply(ctx, b.Partition, puts, nil, b.NextOffsets()); err != nil && !errors.Is(err, state.ErrAlreadyApplied) {
			return err
		}
		return nil
	})
}

// runUntilCommitted runs a counting processor over tbl until the group committed the
// input's end, then stops it; it returns what Run returned.
func runCounter(t *testing.T, b *samsatest.Broker, group string, tbl *state.Table[string, int64], until int64) error {
	t.Helper()
	eos := strings.HasSuffix(group, "-eos")
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: b.Addr()}, Group: group, CommitInterval: 50 * time.Millisecond, BatchWait: 5 * time.Millisecond, ExactlyOnce: eos},
		[]processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
		counter(tbl), processor.WithCheckpoint(tbl))
	require.NoError(t, err)
	return runToCommitted(t, b, p, group, until, 30*time.Second)
}

// runToCommitted runs p until group has committed until records of "in"'s two partitions
// (then stops it) or Run returns, at most for timeout, and returns what Run returned.
func runToCommitted[K, V any](t *testing.T, b *samsatest.Broker, p *processor.Processor[K, V], group string, until int64, timeout time.Duration) error {
	t.Helper()
	return runWithin(t, timeout, fmt.Sprintf("group %s commits %d records of in", group, until), p, func() bool {
		c := b.Committed(group, "in")
		return c[0]+c[1] >= until
	})
}

// A table that lost its writes (here: a new, empty one, as a Redis restarted without
// persistence comes back) is detected at assignment: Run fails naming the partitions
// instead of resuming from the committed offsets on empty state. The same table, kept,
// resumes fine; a group whose commits recorded nothing (a checkpoint added later) too.
func TestCheckpointBehindCommitsIsDetected(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processors on the in-process broker")
	}
	for _, mode := range []string{"alo", "eos"} {
		t.Run(mode, func(t *testing.T) { testCheckpointBehind(t, "counts-"+mode) })
	}
}

func testCheckpointBehind(t *testing.T, group string) {
	b := samsatest.NewBroker(t, samsatest.Topic{Name: "in", Partitions: 2})
	in := processor.NewOutput("in", codec.String(), codec.String())
	var recs []samsatest.KV[string, string]
	for i := range 100 {
		recs = append(recs, samsatest.KV[string, string]{Key: fmt.Sprintf("k%d", i%7), Value: "x"})
	}
	samsatest.Produce(t, b.Addr(), in, recs...)

	kept := state.NewMemoryTable[string, int64]()
	require.NoError(t, runCounter(t, b, group, kept, 100))

	samsatest.Produce(t, b.Addr(), in, recs...)
	require.NoError(t, runCounter(t, b, group, kept, 200), "the same table resumes")

	lost := state.NewMemoryTable[string, int64]()
	err := runCounter(t, b, group, lost, 1<<62)
	require.Error(t, err, "an empty table behind the commits must not be resumed")
	assert.ErrorIs(t, err, processor.ErrCheckpointBehind)
	assert.Regexp(t, `in\[[01]\]: the checkpoint reports offset 0 applied, but the group's commit at offset \d+ recorded \d+`, err.Error())
	n, _, _ := lost.Lookup(t.Context(), 2, "k1")
	assert.Zero(t, n, "nothing was applied to the lost table")

	// A group committed without a recorder (the checkpoint is new to it): nothing to compare.
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: b.Addr()}, Group: "plain", CommitInterval: 50 * time.Millisecond},
		[]processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
		processor.HandlerFunc[string, string](func(context.Context, *processor.Batch[string, string]) error { return nil }))
	require.NoError(t, err)
	require.NoError(t, runToCommitted(t, b, p, "plain", 200, 30*time.Second))
	require.NoError(t, runCounter(t, b, "plain", state.NewMemoryTable[string, int64](), 200), "no recorded offsets: the new table is accepted")
}

// flakyCheckpoint fails Applied with err for the first fails calls, then reports 0.
type flakyCheckpoint struct {
	err   error
	fails int
	calls int
	mu    sync.Mutex
}

func (c *flakyCheckpoint) Applied(context.Context, string, int32) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.calls <= c.fails {
		return 0, c.err
	}
	return 0, nil
}

// permanentErr has the Permanent method a Checkpoint's error may carry.
type permanentErr struct{ permanent bool }

func (e permanentErr) Error() string   { return "WRONGPASS invalid username-password pair" }
func (e permanentErr) Permanent() bool { return e.permanent }

// A checkpoint whose store refuses access (a permanent error) fails Run at assignment,
// with the store's error; a transient failure is retried and the processor carries on.
func TestCheckpointPermanentErrorFailsRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processors on the in-process broker")
	}
	b := samsatest.NewBroker(t, samsatest.Topic{Name: "in", Partitions: 2})
	samsatest.Produce(t, b.Addr(), processor.NewOutput("in", codec.String(), codec.String()),
		samsatest.KV[string, string]{Key: "a", Value: "1"}, samsatest.KV[string, string]{Key: "b", Value: "2"})
	run := func(group string, cp processor.Checkpoint) (error, time.Duration) {
		p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: b.Addr()}, Group: group, CommitInterval: 50 * time.Millisecond, BatchWait: 5 * time.Millisecond},
			[]processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
			processor.HandlerFunc[string, string](func(context.Context, *processor.Batch[string, string]) error { return nil }),
			processor.WithCheckpoint(cp))
		require.NoError(t, err)
		start := time.Now()
		err = runToCommitted(t, b, p, group, 2, 20*time.Second)
		return err, time.Since(start)
	}

	err, took := run("refused", &flakyCheckpoint{err: fmt.Errorf("state: redis Applied: %w", permanentErr{true}), fails: 1 << 30})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "WRONGPASS")
	assert.Contains(t, err.Error(), "checkpoint refused the applied offset of in[")
	assert.Less(t, took, 15*time.Second, "fails at assignment, not after the test's bound")

	transient := &flakyCheckpoint{err: permanentErr{false}, fails: 2}
	err, _ = run("transient", transient)
	require.NoError(t, err, "a transient checkpoint failure is retried")
	assert.Greater(t, transient.calls, 2)
}

// countAndEmit counts records per key in tbl, as counter does, and sends each key's new
// count to out in the same batch: the "update state and emit" pattern.
func countAndEmit(tbl *state.Table[string, int64], out processor.Output[string, int64]) processor.Handler[string, string] {
	return processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
		counts := map[string]int64{}
		var keys []string
		for _, r := range b.Records {
			if counts[r.Key] == 0 {
				keys = append(keys, r.Key)
			}
			counts[r.Key]++
		}
		old, _, err := tbl.Partition(b.Partition).GetMany(ctx, keys)
		if err != nil {
			return err
		}
		puts := make([]state.Entry[string, int64], len(keys))
		for i, k := range keys {
			puts[i] = state.Entry[string, int64]{Key: k, Value: old[i] + counts[k]}
			if err := out.Send(b, k, puts[i].Value); err != nil {
				return err
			}
		}
		return tbl.Apply(ctx, b.Partition, puts, nil, b.NextOffsets())
	})
}

// runCountAndEmit runs countAndEmit over "in" with pol until the group committed until
// records or Run returned, and returns what Run returned.
func runCountAndEmit(t *testing.T, b *samsatest.Broker, group string, tbl *state.Table[string, int64], pol processor.Policy, until int64) error {
	t.Helper()
	return runCountAndEmitIn(t, b, processor.Config{Group: group, ErrorPolicy: pol}, tbl, until)
}

// runCountAndEmitIn is runCountAndEmit with cfg's Group, ErrorPolicy and ExactlyOnce.
func runCountAndEmitIn(t *testing.T, b *samsatest.Broker, cfg processor.Config, tbl *state.Table[string, int64], until int64) error {
	t.Helper()
	group := cfg.Group
	out := processor.NewOutput("totals", codec.String(), codec.Int64())
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: b.Addr()}, Group: group, ErrorPolicy: cfg.ErrorPolicy, ExactlyOnce: cfg.ExactlyOnce, CommitInterval: 50 * time.Millisecond, BatchWait: 5 * time.Millisecond},
		[]processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
		countAndEmit(tbl, out), processor.WithCheckpoint(tbl))
	require.NoError(t, err)
	return runToCommitted(t, b, p, group, until, 60*time.Second)
}

// produceOrders writes orderRecords to "in" and returns each key's count.
func produceOrders(t *testing.T, b *samsatest.Broker) map[string]int64 {
	t.Helper()
	recs, want := orderRecords()
	samsatest.Produce(t, b.Addr(), processor.NewOutput("in", codec.String(), codec.String()), recs...)
	return want
}

// orderRecords are 50 records over 5 keys; want is each key's count.
func orderRecords() (recs []samsatest.KV[string, string], want map[string]int64) {
	want = map[string]int64{}
	for i := range 50 {
		k := fmt.Sprintf("c%d", i%5)
		recs = append(recs, samsatest.KV[string, string]{Key: k, Value: "order"})
		want[k]++
	}
	return recs, want
}

// assertCounts checks the table against want, and that the highest total sent for each
// key on "totals" is its count (outputs are at least once: totals may repeat).
func assertCounts(t *testing.T, b *samsatest.Broker, tbl *state.Table[string, int64], want map[string]int64) {
	t.Helper()
	for k, n := range want {
		got, _, err := tbl.Lookup(t.Context(), 2, k)
		require.NoError(t, err)
		assert.Equal(t, n, got, "table count of %s", k)
	}
	last := map[string]int64{}
	outs, err := samsatest.ReadAll(t.Context(), b.Addr(), "totals", codec.String(), codec.Int64())
	require.NoError(t, err)
	for _, r := range outs {
		last[r.Key] = max(last[r.Key], r.Value)
	}
	assert.Equal(t, want, last, "the latest total per key on the output topic")
}

// A checkpointed table plus outputs never loses the outputs: while the output topic is
// missing the batches fail and leave no state effects (nothing applied, nothing
// committed), and once it exists the same records are handled again, so the table
// counts each record once and every count reaches the output topic. Before state
// effects were staged, the table recorded the failed batches as applied and the rerun
// skipped them: the table was right and the output topic empty.
func TestCheckpointedStateAndOutputsMissingTopic(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processors on the in-process broker")
	}
	b := samsatest.NewBroker(t, samsatest.Topic{Name: "in", Partitions: 2})
	want := produceOrders(t, b)
	tbl := state.NewMemoryTable[string, int64]()

	err := runCountAndEmit(t, b, "totals", tbl, processor.Stop(), 50)
	require.Error(t, err, "the output topic is missing")
	assert.Contains(t, err.Error(), `"totals"`)
	for p := range int32(2) {
		n, err := tbl.Applied(t.Context(), "in", p)
		require.NoError(t, err)
		assert.Zero(t, n, "partition %d: nothing applied for outputs never acknowledged", p)
	}
	assert.Zero(t, b.Committed("totals", "in")[0]+b.Committed("totals", "in")[1], "nothing committed")

	require.NoError(t, b.CreateTopic("totals", 2))
	require.NoError(t, runCountAndEmit(t, b, "totals", tbl, processor.Stop(), 50))
	assertCounts(t, b, tbl, want)
}

// Under DeadLetter, outputs the broker refuses send their whole batch to the
// dead-letter topic with its state effects dropped, so redriving the dead letters counts
// each record once (applied, the redrive would count the refused records twice).
func TestCheckpointedStateAndOutputsRefusedDeadLetter(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processors on the in-process broker")
	}
	b := samsatest.NewBroker(t, samsatest.Topic{Name: "in", Partitions: 2}, samsatest.Topic{Name: "totals", Partitions: 2},
		samsatest.Topic{Name: "dlq", Partitions: 1})
	recs, want := orderRecords()
	in := processor.NewOutput("in", codec.String(), codec.String())
	samsatest.Produce(t, b.Addr(), in, recs...)
	tbl := state.NewMemoryTable[string, int64]()

	refuse := b.FailProduce("totals", -1, false)
	require.NoError(t, runCountAndEmit(t, b, "dl", tbl, processor.DeadLetter("dlq"), 50))
	refuse.Remove()
	letters, err := samsatest.ReadAll(t.Context(), b.Addr(), "dlq", codec.String(), codec.String())
	require.NoError(t, err)
	require.Len(t, letters, 50, "every record of the refused batches is dead-lettered")
	for k := range want {
		n, _, err := tbl.Lookup(t.Context(), 2, k)
		require.NoError(t, err)
		assert.Zero(t, n, "no effect of a dead-lettered batch is applied (%s)", k)
	}

	// Redrive: the dead letters go back to the input and are counted once.
	var again []samsatest.KV[string, string]
	for _, l := range letters {
		again = append(again, samsatest.KV[string, string]{Key: l.Key, Value: l.Value})
	}
	samsatest.Produce(t, b.Addr(), in, again...)
	require.NoError(t, runCountAndEmit(t, b, "dl", tbl, processor.DeadLetter("dlq"), 100))
	assertCounts(t, b, tbl, want)
}

// In exactly-once mode a checkpointed table's effects are made after the transaction
// that commits the batch's outputs and offsets: outputs the broker refuses abort the
// transactions (until Run gives up) and leave no effects, and the rerun, once the
// broker takes them, counts each record once and sends each count exactly once. Before,
// the handler's Apply was made at once: the aborted batches stayed applied and the
// rerun skipped them, leaving the output topic without them.
func TestCheckpointedStateAndOutputsExactlyOnceRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processors on the in-process broker")
	}
	b := samsatest.NewBroker(t, samsatest.Topic{Name: "in", Partitions: 2}, samsatest.Topic{Name: "totals", Partitions: 2})
	want := produceOrders(t, b)
	tbl := state.NewMemoryTable[string, int64]()
	cfg := processor.Config{Group: "eos", ErrorPolicy: processor.Stop(), ExactlyOnce: true}

	refuse := b.FailProduce("totals", -1, false)
	err := runCountAndEmitIn(t, b, cfg, tbl, 50)
	refuse.Remove()
	require.ErrorContains(t, err, "transactions aborted")
	for p := range int32(2) {
		n, err := tbl.Applied(t.Context(), "in", p)
		require.NoError(t, err)
		assert.Zero(t, n, "partition %d: nothing applied for aborted transactions", p)
	}
	assert.Zero(t, b.Committed("eos", "in")[0]+b.Committed("eos", "in")[1], "nothing committed")

	require.NoError(t, runCountAndEmitIn(t, b, cfg, tbl, 50))
	assertCounts(t, b, tbl, want)
	sent := map[string][]int64{}
	for _, m := range readCommitted(t, b.Addr(), "totals", 5, 10*time.Second) {
		v, err := codec.Int64().Decode(m.Value)
		require.NoError(t, err)
		sent[string(m.Key)] = append(sent[string(m.Key)], v)
	}
	for k, n := range want {
		require.NotEmpty(t, sent[k], "committed totals of %s", k)
		assert.Equal(t, n, slices.Max(sent[k]), "the last committed total of %s", k)
		seen := map[int64]bool{}
		for _, v := range sent[k] {
			assert.False(t, seen[v], "total %d of %s committed twice", v, k)
			seen[v] = true
		}
	}
}

// A memory table lives as long as its process: the group's next run on a new one fails
// with ErrCheckpointBehind, and the error says what to do. A new group over a table
// that records records applied skips them, and the log says so.
func TestMemoryTableAcrossRunsAndGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processors on the in-process broker")
	}
	b := samsatest.NewBroker(t, samsatest.Topic{Name: "in", Partitions: 2}, samsatest.Topic{Name: "totals", Partitions: 2})
	produceOrders(t, b)
	// run runs a processor of group over tbl until done holds or Run returns.
	run := func(group string, tbl *state.Table[string, int64], log *slog.Logger, what string, done func() bool) error {
		cfg := b.ProcessorConfig(group)
		p, err := processor.New(cfg, []processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
			countAndEmit(tbl, processor.NewOutput("totals", codec.String(), codec.Int64())), processor.WithCheckpoint(tbl), processor.WithLogger(log))
		require.NoError(t, err)
		return runWithin(t, 30*time.Second, what, p, done)
	}
	committedAll := func(group string) bool { c := b.Committed(group, "in"); return c[0]+c[1] >= 50 }
	quiet := slog.New(slog.DiscardHandler)
	first := state.NewMemoryTable[string, int64]()
	// Until g committed every record and its commits record them applied.
	require.NoError(t, run("g", first, quiet, "g commits every record, recording them applied", func() bool {
		return committedAll("g") && commitsRecordApplied(t, b.Addr(), "g")
	}))

	err := run("g", state.NewMemoryTable[string, int64](), quiet, "the error at assignment", func() bool { return false })
	require.ErrorIs(t, err, processor.ErrCheckpointBehind)
	assert.Contains(t, err.Error(), "state.NewTable", "the error says an in-memory table does not outlive its process")
	assert.Contains(t, err.Error(), "samsa reset", "and how to rebuild or go on")

	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelWarn}))
	require.NoError(t, run("new-group", first, log, "new-group commits every record", func() bool { return committedAll("new-group") }))
	mu.Lock()
	defer mu.Unlock()
	assert.Contains(t, logs.String(), "the group has committed nothing of this partition, but the checkpoint records records applied")
	assert.Equal(t, 2, strings.Count(logs.String(), "committed nothing"), "one warning per partition:\n%s", logs.String())
}

// commitsRecordApplied reports whether group's commit of each of "in"'s two partitions
// records its own offset as applied (the commit metadata of a processor with a
// checkpoint that records what it applied).
func commitsRecordApplied(t *testing.T, brokers, group string) bool {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": group, "log_level": 3})
	require.NoError(t, err)
	defer c.Close()
	topic := "in"
	res, err := c.Committed([]kafka.TopicPartition{{Topic: &topic, Partition: 0}, {Topic: &topic, Partition: 1}}, 10_000)
	if err != nil {
		return false
	}
	for _, tp := range res {
		if tp.Metadata == nil || *tp.Metadata != fmt.Sprintf("samsa:applied=%d", tp.Offset) {
			return false
		}
	}
	return true
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
