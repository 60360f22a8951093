package integration

import (
	"context"
	"errors"
	"fmt"
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

// A checkpointed Table whose Redis keys are lost (as when Redis restarts without
// persistence) is detected when its partitions are next assigned: the group's commits
// recorded the applied offsets, the table reports less, and Run fails naming the
// partition instead of resuming from the committed offsets on empty state.
func TestTableLostWritesDetectedAtAssignment(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	rdb := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(t)})
	t.Cleanup(func() { rdb.Close() })
	in, group := stack.UniqueName("lost-in"), stack.UniqueName("lost")
	ns := stack.UniqueName("lost.ns")
	harness.CreateTopic(t, brokers, in, 2, 1)
	recs := make([]samsatest.KV[string, string], 300)
	for i := range recs {
		recs[i] = samsatest.KV[string, string]{Key: fmt.Sprintf("k%d", i%11), Value: "x"}
	}
	samsatest.Produce(t, brokers, processor.NewOutput(in, codec.String(), codec.String()), recs...)

	run := func(stopAt int64) error {
		tbl, err := state.NewTable(rdb, ns, codec.String(), codec.Int64())
		require.NoError(t, err)
		p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: group, CommitInterval: 100 * time.Millisecond},
			[]processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
			processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
				puts := make([]state.Entry[string, int64], 0, len(b.Records))
				for _, r := range b.Records {
					puts = append(puts, state.Entry[string, int64]{Key: r.Key, Value: r.Offset})
				}
				if err := tbl.Apply(ctx, b.Partition, puts, nil, b.NextOffsets()); err != nil && !errors.Is(err, state.ErrAlreadyApplied) {
					return err
				}
				return nil
			}), processor.WithCheckpoint(tbl))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		for {
			select {
			case err := <-done:
				return err
			case <-time.After(50 * time.Millisecond):
			}
			c := harness.CommittedOffsets(t, brokers, group, in, 2)
			if c[0]+c[1] >= stopAt {
				cancel()
				return <-done
			}
		}
	}
	require.NoError(t, run(300))

	// Redis loses the table's keys.
	keys, err := rdb.Keys(context.Background(), "{"+ns+"*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys, "the table wrote nothing under its namespace")
	require.NoError(t, rdb.Del(context.Background(), keys...).Err())

	start := time.Now()
	err = run(1 << 62)
	t.Logf("restarted on the emptied table: Run returned after %s: %v", time.Since(start).Round(time.Millisecond), err)
	require.Error(t, err)
	assert.ErrorIs(t, err, processor.ErrCheckpointBehind)
	assert.Contains(t, err.Error(), in+"[")
	c := harness.CommittedOffsets(t, brokers, group, in, 2)
	assert.EqualValues(t, 300, c[0]+c[1], "nothing more committed")
}
