package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/testwait"
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
	testwait.For(t, 30*time.Second, "40 live outputs", func() bool { return total(endOffsets(t, brokers, out)) == 40 })

	rebuiltTable, _ := newTable(t, redisAddr, rebuiltNS)
	planPath := filepath.Join(t.TempDir(), "plan.json")
	replay := func() {
		t.Helper()
		stdout, _, code := samsa(t, brokers, "replay", "plan", "-group", replayGroup, "-topic", in, "-namespace", rebuiltNS, "-redis", redisAddr, "-out", planPath)
		require.Equal(t, 0, code)
		assert.Contains(t, stdout, "replay plan "+planPath)
		// Decoded as the replay help tells a program to.
		var plan struct {
			Group, Namespace string
			processor.Replay
		}
		b, err := os.ReadFile(planPath)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &plan))
		require.Equal(t, replayGroup, plan.Group)
		require.Equal(t, rebuiltNS, plan.Namespace)
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

// TestReplayEndsAfterTransactionMarker: an input written in transactions ends with a
// commit marker, so the plan's end offset (the last stable offset) lies past the last
// record. The replay (reading read_committed, as exactly-once processors do) still
// stops there, by its position, and counts every committed record once; an aborted
// transaction's records are not handled.
func TestReplayEndsAfterTransactionMarker(t *testing.T) {
	brokers, _ := realStack(t)
	in, group := stack.UniqueName("replay-txn"), stack.UniqueName("replay-txn-g")
	createTopic(t, brokers, in, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	writeTransactions(t, brokers, in)

	stdout, _, code := samsa(t, brokers, "replay", "plan", "-group", group, "-topic", in)
	require.Equal(t, 0, code)
	var plan replayPlan
	require.NoError(t, json.Unmarshal([]byte(stdout), &plan))
	// 3 records + marker, 1 aborted + marker, 1 record + marker.
	require.Equal(t, []processor.PartitionOffset{{Topic: in, Partition: 0, Offset: 8}}, plan.Until)

	var sum, n atomic.Int64
	h := processor.HandlerFunc[string, int64](func(_ context.Context, b *processor.Batch[string, int64]) error {
		for _, r := range b.Records {
			sum.Add(r.Value)
			n.Add(1)
		}
		return nil
	})
	cfg := testConfig(brokers, group, "replay-txn")
	cfg.ExactlyOnce = true
	rp, err := processor.New(cfg, sumInputs(in), h, processor.WithReplay(plan.Replay))
	require.NoError(t, err)
	require.NoError(t, rp.Run(ctx), "the replay stops at the end offset past the commit marker")
	assert.EqualValues(t, 4, n.Load())
	assert.EqualValues(t, 10, sum.Load())
}

// TestReplayUnfinished: a replay stopped before its end offsets commits what it
// finished and says so; run again, it resumes and handles each record once.
func TestReplayUnfinished(t *testing.T) {
	brokers, _ := realStack(t)
	in, group := stack.UniqueName("replay-stop"), stack.UniqueName("replay-stop-g")
	createTopic(t, brokers, in, 1)
	var msgs []*record.Message
	for i := range 20 {
		msgs = append(msgs, int64Msg(in, 0, "k", int64(i), time.Now()))
	}
	produceAll(t, brokers, msgs)
	ends := endOffsets(t, brokers, in)
	replay := processor.Replay{SuppressOutputs: true, Until: []processor.PartitionOffset{{Topic: in, Partition: 0, Offset: ends[record.TopicPartition{Topic: in, Partition: 0}]}}}

	var handled atomic.Int64
	stopAfter := make(chan struct{})
	h := processor.HandlerFunc[string, int64](func(_ context.Context, b *processor.Batch[string, int64]) error {
		if handled.Add(int64(len(b.Records))) >= 5 && handled.Load()-int64(len(b.Records)) < 5 {
			close(stopAfter)
		}
		time.Sleep(20 * time.Millisecond) // slow work: the stop lands before the end offsets
		return nil
	})
	cfg := testConfig(brokers, group, "replay-stop")
	cfg.BatchSize = 1
	p, err := processor.New(cfg, sumInputs(in), h, processor.WithReplay(replay))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-stopAfter:
		case <-time.After(30 * time.Second):
		}
		cancel()
	}()
	err = p.Run(ctx)
	require.ErrorIs(t, err, processor.ErrReplayUnfinished)
	first := handled.Load()
	require.Less(t, first, int64(20))
	assert.Equal(t, first, committed(t, brokers, group)[record.TopicPartition{Topic: in, Partition: 0}], "what it handled is committed")

	p, err = processor.New(cfg, sumInputs(in), h, processor.WithReplay(replay))
	require.NoError(t, err)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	require.NoError(t, p.Run(ctx2))
	assert.EqualValues(t, 20, handled.Load(), "each record handled once over both runs")
}

// writeTransactions writes to partition 0 of topic, in transactions: values 1, 2, 3
// committed (offsets 0-2, marker 3), 1000 aborted (4, marker 5), 4 committed (6, marker
// 7).
func writeTransactions(t *testing.T, brokers, topic string) {
	t.Helper()
	p, err := produce.New(produce.Config{Brokers: brokers, TransactionalID: stack.UniqueName("txn-id"), TransactionTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer p.Close(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.InitTransactions(ctx))
	txn := func(commit bool, values ...int64) {
		require.NoError(t, p.BeginTransaction())
		acks := make(chan error, len(values))
		for _, v := range values {
			require.NoError(t, p.Produce(ctx, int64Msg(topic, 0, "k", v, time.Now()), ackFunc(func(_ *record.Message, err error) { acks <- err })))
		}
		for range values {
			require.NoError(t, <-acks)
		}
		if commit {
			require.NoError(t, p.CommitTransaction(ctx))
		} else {
			require.NoError(t, p.AbortTransaction(ctx))
		}
	}
	txn(true, 1, 2, 3)
	txn(false, 1000)
	txn(true, 4)
}
