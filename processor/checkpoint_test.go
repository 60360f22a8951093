package processor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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
	p, err := processor.New(processor.Config{Brokers: b.Addr(), Group: group, CommitInterval: 50 * time.Millisecond, BatchWait: 5 * time.Millisecond, ExactlyOnce: eos},
		[]processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
		counter(tbl), processor.WithCheckpoint(tbl))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for {
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Millisecond):
		}
		c := b.Committed(group, "in")
		if c[0]+c[1] >= until {
			cancel()
			return <-done
		}
	}
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
	p, err := processor.New(processor.Config{Brokers: b.Addr(), Group: "plain", CommitInterval: 50 * time.Millisecond},
		[]processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
		processor.HandlerFunc[string, string](func(context.Context, *processor.Batch[string, string]) error { return nil }))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	require.Eventually(t, func() bool { c := b.Committed("plain", "in"); return c[0]+c[1] == 200 }, 30*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
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
		p, err := processor.New(processor.Config{Brokers: b.Addr(), Group: group, CommitInterval: 50 * time.Millisecond, BatchWait: 5 * time.Millisecond},
			[]processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
			processor.HandlerFunc[string, string](func(context.Context, *processor.Batch[string, string]) error { return nil }),
			processor.WithCheckpoint(cp))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		for {
			select {
			case err := <-done:
				return err, time.Since(start)
			case <-time.After(20 * time.Millisecond):
			}
			if c := b.Committed(group, "in"); c[0]+c[1] == 2 {
				cancel()
				return <-done, time.Since(start)
			}
		}
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
