package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
	"github.com/samsa-go/samsa/state"
)

// Update state and emit, on the real broker and Redis: a handler keeps a count per key
// in a checkpointed state.Table and sends, for each record, its key's count after it.
// Whatever happens to the outputs, the table and the output topic agree afterwards: each
// key's outputs are exactly the counts 1..n (at least once each), n being the table's
// count, which is the number of the key's records that were not dead-lettered.

// countEach is the handler: each record's key's count after it goes to out. Records
// whose value is "big" get an output value of 8,000 bytes.
func countEach(tbl *state.Table[string, int64], out processor.Output[string, string]) processor.Handler[string, string] {
	return processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
		return foldKeys(ctx, tbl, b, func(r processor.Record[string, string], count *int64) error {
			*count++
			v := fmt.Sprint(*count)
			if r.Value == "big" {
				v += ":" + strings.Repeat("x", 8000)
			}
			return out.Send(b, r.Key, v)
		})
	})
}

// stateOutputsRun runs countEach until the group committed `until` records of in (2
// partitions) or Run returns, and returns Run's error and how long it ran.
func stateOutputsRun(t *testing.T, brokers, group, in string, tbl *state.Table[string, int64], out string, pol processor.Policy, until int64) (error, time.Duration) {
	t.Helper()
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: group, ErrorPolicy: pol, BatchSize: 25, CommitInterval: 100 * time.Millisecond},
		[]processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
		countEach(tbl, processor.NewOutput(out, codec.String(), codec.String())), processor.WithCheckpoint(tbl))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for {
		select {
		case err := <-done:
			return err, time.Since(start)
		case <-time.After(100 * time.Millisecond):
		}
		if c := harness.CommittedOffsets(t, brokers, group, in, 2); c[0]+c[1] >= until {
			cancel()
			return <-done, time.Since(start)
		}
	}
}

// assertStateAndOutputsAgree checks the table against want (count per key) and that
// each key's outputs on out include the counts 1..want[key]; exact: and no others.
func assertStateAndOutputsAgree(t *testing.T, brokers string, tbl *state.Table[string, int64], out string, want map[string]int64, exact bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := map[string]int64{}
	for k := range want {
		n, _, err := tbl.Lookup(ctx, 2, k)
		require.NoError(t, err)
		got[k] = n
	}
	assert.Equal(t, want, got, "the table's count per key")
	outs, err := samsatest.ReadAll(ctx, brokers, out, codec.String(), codec.String())
	require.NoError(t, err)
	sent := map[string]map[string]bool{}
	for _, r := range outs {
		if sent[r.Key] == nil {
			sent[r.Key] = map[string]bool{}
		}
		sent[r.Key][r.Value] = true
	}
	for k, n := range want {
		exp := map[string]bool{}
		for i := int64(1); i <= n; i++ {
			exp[fmt.Sprint(i)] = true
		}
		if exact {
			assert.Equal(t, exp, sent[k], "the counts sent for %s", k)
			continue
		}
		for c := range exp {
			assert.True(t, sent[k][c], "count %s of %s was never sent", c, k)
		}
	}
	t.Logf("%d outputs for %d records counted", len(outs), sum(want))
}

func sum(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

// A newcomer's orders→totals processor started before its output topic exists: Run fails
// naming the topic, the table applies nothing and the group commits nothing; once the
// topic exists the rerun handles every record, and the table and the outputs agree.
// (Before state effects were staged, the table recorded the failed batches as applied,
// the rerun skipped them, and the output topic stayed empty.)
func TestCheckpointedStateMissingOutputTopicThenRestart(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	rdb := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(t)})
	t.Cleanup(func() { rdb.Close() })
	in, out, group := stack.UniqueName("so-in"), stack.UniqueName("so-totals"), stack.UniqueName("so")
	harness.CreateTopic(t, brokers, in, 2, 1)
	tbl, err := state.NewTable(rdb, stateNamespace(t, rdb), codec.String(), codec.Int64())
	require.NoError(t, err)
	const n = 300
	recs := make([]samsatest.KV[string, string], n)
	want := map[string]int64{}
	for i := range recs {
		recs[i] = samsatest.KV[string, string]{Key: fmt.Sprintf("c%d", i%7), Value: "order"}
		want[recs[i].Key]++
	}
	samsatest.Produce(t, brokers, processor.NewOutput(in, codec.String(), codec.String()), recs...)

	err, took := stateOutputsRun(t, brokers, group, in, tbl, out, processor.Stop(), n)
	t.Logf("without the output topic, Run returned after %s: %v", took.Round(time.Millisecond), err)
	require.Error(t, err)
	assert.Contains(t, err.Error(), out, "the error names the output topic")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for p := range int32(2) {
		a, err := tbl.Applied(ctx, in, p)
		require.NoError(t, err)
		assert.Zero(t, a, "partition %d: no batch applied whose outputs were never acknowledged", p)
	}
	assert.Equal(t, map[int32]int64{}, nonZero(harness.CommittedOffsets(t, brokers, group, in, 2)), "nothing committed")

	harness.CreateTopic(t, brokers, out, 2, 1)
	err, took = stateOutputsRun(t, brokers, group, in, tbl, out, processor.Stop(), n)
	require.NoError(t, err)
	t.Logf("with the topic, the rerun committed all %d records in %s", n, took.Round(time.Millisecond))
	assertStateAndOutputsAgree(t, brokers, tbl, out, want, true)
}

// Outputs the broker refuses (over the output topic's max.message.bytes) under
// DeadLetter: each batch holding a refused output is dead-lettered whole and applies
// none of its state effects, the other batches apply theirs, so the table counts exactly
// the records that were not dead-lettered and the outputs agree with it; redriving the
// dead letters (without the oversize value) then counts every record once.
func TestCheckpointedStateRefusedOutputsDeadLettered(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	rdb := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(t)})
	t.Cleanup(func() { rdb.Close() })
	in, out, dlq, group := stack.UniqueName("sr-in"), stack.UniqueName("sr-totals"), stack.UniqueName("sr-dlq"), stack.UniqueName("sr")
	harness.CreateTopic(t, brokers, in, 2, 1)
	harness.CreateTopic(t, brokers, dlq, 1, 1)
	harness.CreateTopicConfig(t, brokers, out, 2, 1, map[string]string{"max.message.bytes": "2000"})
	tbl, err := state.NewTable(rdb, stateNamespace(t, rdb), codec.String(), codec.Int64())
	require.NoError(t, err)
	const n = 400
	recs := make([]samsatest.KV[string, string], n)
	all := map[string]int64{}
	for i := range recs {
		v := "order"
		if i%97 == 5 {
			v = "big"
		}
		recs[i] = samsatest.KV[string, string]{Key: fmt.Sprintf("c%d", i%7), Value: v}
		all[recs[i].Key]++
	}
	inOut := processor.NewOutput(in, codec.String(), codec.String())
	samsatest.Produce(t, brokers, inOut, recs...)

	err, _ = stateOutputsRun(t, brokers, group, in, tbl, out, processor.DeadLetter(dlq), n)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	letters, err := samsatest.ReadAll(ctx, brokers, dlq, codec.String(), codec.String())
	require.NoError(t, err)
	lettered := map[string]int64{}
	bigs := 0
	for _, l := range letters {
		lettered[l.Key]++
		if l.Value == "big" {
			bigs++
		}
	}
	assert.Equal(t, 5, bigs, "every record with a refused output is dead-lettered")
	assert.Greater(t, len(letters), bigs, "with their batches")
	left := map[string]int64{}
	for k, c := range all {
		left[k] = c - lettered[k]
	}
	t.Logf("%d records dead-lettered (%d with refused outputs)", len(letters), bigs)
	// Outputs of a dead-lettered batch that the broker acknowledged before the refusal
	// stay on the topic (at least once): the counts sent include the table's.
	assertStateAndOutputsAgree(t, brokers, tbl, out, left, false)

	// Redrive without the oversize values: every record is counted once.
	redrive := make([]samsatest.KV[string, string], len(letters))
	for i, l := range letters {
		redrive[i] = samsatest.KV[string, string]{Key: l.Key, Value: "order"}
	}
	samsatest.Produce(t, brokers, inOut, redrive...)
	err, _ = stateOutputsRun(t, brokers, group, in, tbl, out, processor.DeadLetter(dlq), int64(n+len(redrive)))
	require.NoError(t, err)
	assertStateAndOutputsAgree(t, brokers, tbl, out, all, true)
	assert.Equal(t, map[int32]int64{0: int64(len(letters))}, harness.EndOffsets(t, brokers, dlq, 1), "nothing more dead-lettered")
}
