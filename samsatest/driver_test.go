package samsatest_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/testwait"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

// Two instances of a pass-through processor on the in-process broker; partitions move
// between them three times (an instance added, one removed, one added again), one
// produce request is refused and one assignment is lost without a revoke. Every input
// comes out, in order per key, and the group commits to the input's end.
func TestDriverRebalancesAndFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processors on the in-process broker (about 10 s)")
	}
	const in, out, group = "events", "events.copy", "copier"
	b := samsatest.NewBroker(t, samsatest.Topic{Name: in, Partitions: 6}, samsatest.Topic{Name: out, Partitions: 6})
	copyOut := processor.NewOutput(out, codec.String(), codec.String())
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	d := samsatest.NewDriver(t, func(i int) (samsatest.Runner, error) {
		cfg := b.ProcessorConfig(group)
		cfg.ErrorPolicy = processor.Retry(5, processor.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond}, processor.Stop())
		return processor.New(cfg, []processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
			processor.HandlerFunc[string, string](func(ctx context.Context, bt *processor.Batch[string, string]) error {
				for _, r := range bt.Records {
					if err := copyOut.Send(bt, r.Key, r.Value); err != nil {
						return err
					}
				}
				return nil
			}), processor.WithLogger(logger.With("instance", i)))
	})

	input := processor.NewOutput(in, codec.String(), codec.String())
	seq := 0
	produce := func(n int) {
		recs := make([]samsatest.KV[string, string], n)
		for i := range recs {
			k := fmt.Sprintf("key-%d", seq%25)
			recs[i] = samsatest.KV[string, string]{Key: k, Value: fmt.Sprintf("%s#%06d", k, seq)}
			seq++
		}
		samsatest.Produce(t, b.Addr(), input, recs...)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	balanced := func(members int) {
		t.Helper()
		require.NoError(t, b.WaitBalanced(ctx, group, in, members))
		require.NoError(t, d.Failed())
	}

	first := d.Add()
	produce(500)
	second := d.Add() // move 1: half the partitions go to the new instance
	balanced(2)
	produce(500)

	// A produce request refused with a retriable error: the producer retries it in order.
	// (A non-retriable refusal under Retry resends the failed outputs after later batches'
	// outputs of the partition: see processor.Retry.)
	wait := b.FailProduce(out, 1, true)
	produce(500)
	require.NoError(t, wait.Wait(ctx), "the produce fault was hit")

	require.NoError(t, d.Remove(first, 30*time.Second)) // move 2: all to the second
	balanced(1)
	produce(500)

	lost := b.LoseAssignment(group)
	require.NoError(t, lost.Wait(ctx), "the lost-assignment fault was hit")
	balanced(1)
	produce(500)

	d.Add() // move 3
	balanced(2)
	produce(500)
	_ = second

	rep := samsatest.RequireDelivered(t, samsatest.Delivery{Brokers: b.Addr(), Input: in, Output: out, Group: group}, 30*time.Second)
	require.Equal(t, 3000, rep.Inputs)
	t.Logf("delivered: %d inputs, %d outputs, %d duplicates (at-least-once replays)", rep.Inputs, rep.Outputs, rep.Duplicates)
	require.NoError(t, d.Stop())
}

// With ProcessorConfig's short session, a lost assignment is back within seconds: the
// records produced after the fault are committed about a SessionTimeout later.
func TestLoseAssignmentSettlesWithinTheSession(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a processor on the in-process broker (about 10 s)")
	}
	const in, group = "lose.in", "loser"
	b := samsatest.NewBroker(t, samsatest.Topic{Name: in, Partitions: 2})
	cfg := b.ProcessorConfig(group)
	d := samsatest.NewDriver(t, func(int) (samsatest.Runner, error) {
		return processor.New(cfg, []processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
			processor.HandlerFunc[string, string](func(context.Context, *processor.Batch[string, string]) error { return nil }))
	})
	input := processor.NewOutput(in, codec.String(), codec.String())
	total := func(m map[int32]int64) (n int64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	committed := func(want int64) time.Duration {
		t.Helper()
		start := time.Now()
		testwait.ForNoError(t, 60*time.Second, fmt.Sprintf("%d records committed", want), func() error {
			require.NoError(t, d.Failed())
			if c := b.Committed(group, in); total(c) < want {
				return fmt.Errorf("committed %v", c)
			}
			return nil
		})
		return time.Since(start)
	}
	d.Add()
	samsatest.Produce(t, b.Addr(), input, samsatest.KV[string, string]{Key: "a", Value: "1"}, samsatest.KV[string, string]{Key: "b", Value: "2"})
	committed(2)
	lost := b.LoseAssignment(group)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, lost.Wait(ctx))
	samsatest.Produce(t, b.Addr(), input, samsatest.KV[string, string]{Key: "a", Value: "3"}, samsatest.KV[string, string]{Key: "b", Value: "4"})
	took := committed(4)
	t.Logf("records produced after the lost assignment committed %s later (SessionTimeout %s)", took.Round(time.Millisecond), cfg.SessionTimeout)
	require.NoError(t, d.Stop())
}
