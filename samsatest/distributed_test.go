package samsatest_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/distributed"
	"github.com/samsa-go/samsa/internal/testwait"
	"github.com/samsa-go/samsa/samsatest"
)

// Three hand-offs of a distributed process list between nodes (a node added, the first
// removed, a third added): every process keeps running somewhere, and never on two
// nodes at once.
func TestDistributedHandOffsNoOverlap(t *testing.T) {
	if testing.Short() {
		t.Skip("runs distributed nodes on the in-process broker (about 10 s)")
	}
	b := samsatest.NewBroker(t)
	const procs = 8
	list := make([]distributed.Process, procs)
	for i := range list {
		list[i] = func(ctx context.Context) error {
			<-ctx.Done() // a long-lived worker: runs until its slice moves or the node stops
			return nil
		}
	}
	tracked, tracker := samsatest.Track(list)
	d := samsatest.NewDriver(t, func(i int) (samsatest.Runner, error) {
		n, err := distributed.New(distributed.Config{
			Membership: distributed.Membership{Brokers: b.Addr(), SessionTimeout: 6 * time.Second, HeartbeatInterval: 200 * time.Millisecond, StopTimeout: 5 * time.Second}, Partitions: 4, NodeID: fmt.Sprintf("node-%d", i),
		}, distributed.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", i)))
		if err != nil {
			return nil, err
		}
		return samsatest.RunnerFunc(func(ctx context.Context) error { return n.Run(ctx, "jobs", tracked) }), nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const topic, group = "samsa.distributed.jobs", "jobs"
	allRunning := func(nodes int) {
		t.Helper()
		require.NoError(t, b.WaitBalanced(ctx, group, topic, nodes), "%v", d.Failed())
		testwait.ForNoError(t, 20*time.Second, "every process running", func() error {
			for _, n := range tracker.Running(procs) {
				if n == "" {
					return fmt.Errorf("\n%s", tracker)
				}
			}
			return nil
		})
		require.NoError(t, d.Failed())
	}

	first := d.Add()
	allRunning(1)
	d.Add() // hand-off 1: half the slices move to node-1
	allRunning(2)
	require.NoError(t, d.Remove(first, 20*time.Second)) // hand-off 2: node-0's slices move to node-1
	allRunning(1)
	d.Add() // hand-off 3
	allRunning(2)
	require.NoError(t, d.Stop())

	assert.Empty(t, tracker.Overlaps(), "%s", tracker)
	moved := 0
	for i := range procs {
		for _, g := range tracker.Gaps(i) {
			moved++
			assert.Positive(t, g, "process %d started on its new node before it stopped on the old one", i)
		}
	}
	assert.GreaterOrEqual(t, moved, 3*procs/2, "each hand-off moved processes:\n%s", tracker)
	t.Logf("%d process moves, no overlap", moved)
}
