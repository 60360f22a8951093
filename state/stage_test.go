package state_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/internal/effect"
	"github.com/samsa-go/samsa/state"
)

// Apply with a processor handler's context (one carrying a staged batch) writes nothing
// until the batch is committed; reads through that context see the staged writes at
// once, other reads do not; the caller's slices may be reused after Apply returns.
func TestApplyStagedInHandlerContext(t *testing.T) {
	tbl := state.NewMemoryTable[string, int64]()
	ctx := context.Background()
	require.NoError(t, tbl.Partition(0).Put(ctx, "gone", 7))

	staged := new(effect.Batch)
	hctx := effect.NewContext(ctx, staged)
	puts := []state.Entry[string, int64]{{Key: "a", Value: 1}, {Key: "b", Value: 2}}
	deletes := []string{"gone"}
	offsets := map[string]int64{"in": 10}
	require.NoError(t, tbl.Apply(hctx, 0, puts, deletes, offsets))
	puts[0].Value, deletes[0], offsets["in"] = 99, "a", 99 // reused by the caller

	v, ok, err := tbl.Partition(0).Get(hctx, "a")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, int64(1), v, "the handler reads its staged write")
	_, ok, err = tbl.Partition(0).Get(hctx, "gone")
	require.NoError(t, err)
	assert.False(t, ok, "a staged delete hides the stored value")
	vs, found, err := tbl.Partition(0).GetMany(hctx, []string{"b", "gone", "none"})
	require.NoError(t, err)
	assert.Equal(t, []int64{2, 0, 0}, vs)
	assert.Equal(t, []bool{true, false, false}, found)
	_, ok, _ = tbl.Partition(1).Get(hctx, "a")
	assert.False(t, ok, "another partition's key")

	_, ok, _ = tbl.Partition(0).Get(ctx, "a")
	assert.False(t, ok, "nothing is written before the commit")
	n, err := tbl.Applied(ctx, "in", 0)
	require.NoError(t, err)
	assert.Zero(t, n)

	require.NoError(t, staged.Commit(ctx))
	v, _, _ = tbl.Partition(0).Get(ctx, "a")
	assert.Equal(t, int64(1), v)
	_, ok, _ = tbl.Partition(0).Get(ctx, "gone")
	assert.False(t, ok)
	n, err = tbl.Applied(ctx, "in", 0)
	require.NoError(t, err)
	assert.Equal(t, int64(10), n, "the offsets given, not the caller's later change")
}

// A staged Apply is checked when it is called: bad offsets fail there, and a later
// commit of an Apply already made is not an error.
func TestApplyStagedChecksAndIdempotence(t *testing.T) {
	tbl := state.NewMemoryTable[string, int64]()
	staged := new(effect.Batch)
	hctx := effect.NewContext(context.Background(), staged)
	assert.Error(t, tbl.Apply(hctx, 0, nil, nil, nil), "no offsets")
	assert.Error(t, tbl.Apply(hctx, 0, nil, nil, map[string]int64{"in": -1}), "negative offset")
	assert.Error(t, tbl.Apply(hctx, -1, nil, nil, map[string]int64{"in": 1}), "negative partition")
	assert.Zero(t, staged.Pending())

	require.NoError(t, tbl.Apply(context.Background(), 0, []state.Entry[string, int64]{{Key: "a", Value: 1}}, nil, map[string]int64{"in": 5}))
	require.NoError(t, tbl.Apply(hctx, 0, []state.Entry[string, int64]{{Key: "a", Value: 2}}, nil, map[string]int64{"in": 5}))
	require.NoError(t, staged.Commit(context.Background()), "already applied counts as made")
	v, _, _ := tbl.Partition(0).Get(context.Background(), "a")
	assert.Equal(t, int64(1), v, "an Apply already made writes nothing again")
}

// Exactly-once: a batch's context follows the batches staged before it and not made yet.
// GetMany mixes their staged values with stored ones, and sees the same values after an
// earlier batch's writes are made (read from the store then) or through its own writes.
func TestGetManyThroughEarlierStagedBatches(t *testing.T) {
	tbl := state.NewMemoryTable[string, int64]()
	ctx := context.Background()
	require.NoError(t, tbl.Partition(0).Put(ctx, "stored", 5))

	first := new(effect.Batch)
	require.NoError(t, tbl.Apply(effect.NewContext(ctx, first), 0,
		[]state.Entry[string, int64]{{Key: "a", Value: 1}, {Key: "b", Value: 1}}, nil, map[string]int64{"in": 10}))
	second := new(effect.Batch)
	second.Follow(first)
	sctx := effect.NewContext(ctx, second)
	require.NoError(t, tbl.Apply(sctx, 0, []state.Entry[string, int64]{{Key: "b", Value: 2}}, nil, map[string]int64{"in": 20}))

	keys := []string{"a", "b", "stored", "none"}
	want := []int64{1, 2, 5, 0}
	vs, found, err := tbl.Partition(0).GetMany(sctx, keys)
	require.NoError(t, err)
	assert.Equal(t, want, vs)
	assert.Equal(t, []bool{true, true, true, false}, found)

	require.NoError(t, first.Commit(ctx))
	vs, _, err = tbl.Partition(0).GetMany(sctx, keys)
	require.NoError(t, err)
	assert.Equal(t, want, vs, "the first batch made: its values come from the store")
	n, err := tbl.Applied(ctx, "in", 0)
	require.NoError(t, err)
	assert.Equal(t, int64(10), n)

	require.NoError(t, second.Commit(ctx))
	vs, _, err = tbl.Partition(0).GetMany(ctx, keys)
	require.NoError(t, err)
	assert.Equal(t, want, vs)
}
