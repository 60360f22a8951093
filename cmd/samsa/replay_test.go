package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/processor"
)

// TestReplayRebuild rebuilds a live processor's checkpointed table into a new namespace
// while the live processor keeps running: samsa replay plan writes the end offsets, a
// processor.WithReplay run with outputs suppressed handles up to them and stops (no
// record reaches the output topic), and samsa table compare finds the rebuilt table
// equal to the live one. When more records arrive the live table moves on and compare
// says so; a second plan and replay (resuming the replay group) make them equal again.
func TestReplayRebuild(t *testing.T) {
	brokers, redisAddr := realStack(t)
	in, out := stack.UniqueName("replay-in"), stack.UniqueName("replay-out")
	group, replayGroup := stack.UniqueName("replay-live"), stack.UniqueName("replay-rebuild")
	liveNS, rebuiltNS := stack.UniqueName("live"), stack.UniqueName("rebuilt")
	createTopic(t, brokers, in, 2)
	createTopic(t, brokers, out, 2)
	produceRound := func(round, n int) {
		var msgs []*record.Message
		for i := range n {
			msgs = append(msgs, int64Msg(in, -1, fmt.Sprintf("k%d", i%8), int64(round*100+i), time.Now()))
		}
		produceAll(t, brokers, msgs)
	}
	output := processor.NewOutput(out, codec.String(), codec.Int64())

	liveTable, _ := newTable(t, redisAddr, liveNS)
	lp, err := processor.New(testConfig(brokers, group, "replay-live"), sumInputs(in), &summer{table: liveTable, out: output}, processor.WithCheckpoint(liveTable))
	require.NoError(t, err)
	live := startProcessor(t, lp)
	produceRound(0, 40)
	waitCommitted(t, brokers, group, in, endOffsets(t, brokers, in))
	waitFor(t, 30*time.Second, "40 live outputs", func() bool { return total(endOffsets(t, brokers, out)) == 40 })

	rebuiltTable, _ := newTable(t, redisAddr, rebuiltNS)
	planPath := filepath.Join(t.TempDir(), "plan.json")
	replay := func() {
		t.Helper()
		stdout, _, code := samsa(t, brokers, "replay", "plan", "-group", replayGroup, "-topic", in, "-namespace", rebuiltNS, "-redis", redisAddr, "-out", planPath)
		require.Equal(t, 0, code)
		assert.Contains(t, stdout, "replay plan "+planPath)
		plan, err := processor.ReadReplayPlan(planPath)
		require.NoError(t, err)
		require.Equal(t, replayGroup, plan.Group)
		require.True(t, plan.SuppressOutputs)
		outBefore := endOffsets(t, brokers, out)
		cfg := testConfig(brokers, plan.Group, "replay-rebuild")
		p, err := processor.New(cfg, sumInputs(in), &summer{table: rebuiltTable, out: output},
			processor.WithCheckpoint(rebuiltTable), processor.WithReplay(plan.Replay))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		require.NoError(t, p.Run(ctx), "the replay stops by itself once it reached the plan's end offsets")
		// The replay committed exactly the plan's end offsets.
		want := map[record.TopicPartition]int64{}
		for _, u := range plan.Until {
			want[record.TopicPartition{Topic: u.Topic, Partition: u.Partition}] = u.Offset
		}
		assert.Equal(t, want, committed(t, brokers, replayGroup))
		// Outputs suppressed: the output topic did not move (the live processor is idle).
		assert.Equal(t, outBefore, endOffsets(t, brokers, out), "the replay produced to the output topic")
	}

	// A replay from the start into a namespace that holds data is refused.
	_, stderr, code := samsa(t, brokers, "replay", "plan", "-group", stack.UniqueName("replay-other"), "-topic", in, "-namespace", liveNS, "-redis", redisAddr)
	requireOneLine(t, code, stderr, 1, fmt.Sprintf("namespace %q already holds table partitions", liveNS))

	replay()
	stdout, _, code := samsa(t, "", "table", "compare", "-redis", redisAddr, "-a", liveNS, "-b", rebuiltNS)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "\nequal\n")
	assert.Contains(t, stdout, "to switch, restart the processor with namespace "+rebuiltNS)

	// The live processor moves on; the rebuilt table is behind.
	produceRound(1, 10)
	waitCommitted(t, brokers, group, in, endOffsets(t, brokers, in))
	stdout, _, code = samsa(t, "", "table", "compare", "-redis", redisAddr, "-a", liveNS, "-b", rebuiltNS)
	require.Equal(t, 3, code)
	assert.Contains(t, stdout, "different: the tables have not applied the same offsets")

	// Plan and replay again: the replay group resumes, and the tables agree.
	replay()
	_, _, code = samsa(t, "", "table", "compare", "-redis", redisAddr, "-a", liveNS, "-b", rebuiltNS, "-o", "json")
	require.Equal(t, 0, code)
	require.NoError(t, live.stop())
}

// TestReplayPlanCoversInputs: a replay whose end offsets miss an input partition fails
// at start, naming it, and handles nothing.
func TestReplayPlanCoversInputs(t *testing.T) {
	brokers, _ := realStack(t)
	in := stack.UniqueName("replay-cover")
	createTopic(t, brokers, in, 2)
	h := processor.HandlerFunc[string, int64](func(context.Context, *processor.Batch[string, int64]) error {
		t.Error("handler called")
		return nil
	})
	p, err := processor.New(testConfig(brokers, stack.UniqueName("replay-cover"), "replay-cover"), sumInputs(in), h,
		processor.WithReplay(processor.Replay{Until: []processor.PartitionOffset{{Topic: in, Partition: 0, Offset: 0}}}))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = p.Run(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("no end offset for input partitions %s[1]", in))

	_, err = processor.New(testConfig(brokers, "g", "c"), sumInputs(in), h,
		processor.WithReplay(processor.Replay{Until: []processor.PartitionOffset{{Topic: in, Partition: 0, Offset: -1}}}))
	require.ErrorContains(t, err, "offset >= 0")
}

func total(m map[record.TopicPartition]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
