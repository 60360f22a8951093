package effect

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStageLookupRollbackCommit(t *testing.T) {
	var made []string
	applyOf := func(name string) func(context.Context) error {
		return func(context.Context) error { made = append(made, name); return nil }
	}
	b := new(Batch)
	assert.Same(t, b, FromContext(NewContext(context.Background(), b)))
	assert.Nil(t, FromContext(context.Background()))

	b.Stage([]Write{{Key: "a", Value: 1}, {Key: "b", Value: 2}}, applyOf("first"))
	m := b.Mark()
	b.Stage([]Write{{Key: "a", Value: 10}, {Key: "b", Deleted: true}}, applyOf("second"))
	w, ok := b.Lookup("a")
	require.True(t, ok)
	assert.Equal(t, 10, w.Value, "the latest write of a key wins")
	w, _ = b.Lookup("b")
	assert.True(t, w.Deleted)
	_, ok = b.Lookup("c")
	assert.False(t, ok)
	assert.Equal(t, 2, b.Pending())

	b.Rollback(m) // the second handler call failed
	w, _ = b.Lookup("a")
	assert.Equal(t, 1, w.Value, "rolled back to the write before the mark")
	w, _ = b.Lookup("b")
	assert.Equal(t, Write{Key: "b", Value: 2}, w)
	assert.Equal(t, 1, b.Pending())

	require.NoError(t, b.Commit(context.Background()))
	assert.Equal(t, []string{"first"}, made)
	assert.Zero(t, b.Pending())
	_, ok = b.Lookup("a")
	assert.False(t, ok, "made writes are read from the store")
}

// A failed apply stays staged with those after it; the ones made are not made again.
func TestCommitResumesAfterFailure(t *testing.T) {
	var made []string
	down := errors.New("store down")
	fail := true
	b := new(Batch)
	b.Stage(nil, func(context.Context) error { made = append(made, "one"); return nil })
	b.Stage(nil, func(context.Context) error {
		if fail {
			return down
		}
		made = append(made, "two")
		return nil
	})
	require.ErrorIs(t, b.Commit(context.Background()), down)
	assert.Equal(t, 1, b.Pending())
	fail = false
	require.NoError(t, b.Commit(context.Background()))
	assert.Equal(t, []string{"one", "two"}, made)
}

// A nil Batch (no staging) has nothing staged and nothing to make.
func TestNilBatch(t *testing.T) {
	var b *Batch
	_, ok := b.Lookup("a")
	assert.False(t, ok)
	assert.Zero(t, b.Pending())
	b.Rollback(b.Mark())
	b.Drop()
	assert.NoError(t, b.Commit(context.Background()))
}

// A batch that follows another reads the other's writes through until they are made
// (Commit) or dropped (an aborted transaction); its own writes come first.
func TestFollowReadsEarlierBatchUntilMadeOrDropped(t *testing.T) {
	nop := func(context.Context) error { return nil }
	first, second, third := new(Batch), new(Batch), new(Batch)
	first.Stage([]Write{{Key: "a", Value: 1}, {Key: "b", Value: 1}}, nop)
	second.Follow(first)
	second.Stage([]Write{{Key: "b", Value: 2}}, nop)
	third.Follow(second)
	assert.False(t, new(Batch).Staged())
	assert.True(t, third.Staged(), "staged by the batches it follows")

	w, ok := third.Lookup("a")
	require.True(t, ok)
	assert.Equal(t, 1, w.Value, "through two batches")
	w, ok = third.Lookup("b")
	require.True(t, ok)
	assert.Equal(t, 2, w.Value, "the latest batch's write")

	require.NoError(t, first.Commit(context.Background()))
	_, ok = third.Lookup("a")
	assert.False(t, ok, "made: read from the store now")
	w, _ = third.Lookup("b")
	assert.Equal(t, 2, w.Value)

	second.Drop()
	_, ok = third.Lookup("b")
	assert.False(t, ok, "dropped: never made")
	assert.False(t, third.Staged())
}
