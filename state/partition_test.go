package state_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/state"
)

// The vectors of Kafka's own UtilsTest.testMurmur2, through PartitionOf with a count
// larger than any positive hash, so the partition is the positive hash itself.
func TestPartitionOfMatchesKafkaMurmur2(t *testing.T) {
	tests := []struct {
		key  string
		hash int32
	}{
		{"21", -973932308},
		{"foobar", -790332482},
		{"a-little-bit-long-string", -985981536},
		{"a-little-bit-longer-string", -1486304829},
		{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
		{"abc", 479470107},
	}
	const big = 1<<31 - 1
	for _, tt := range tests {
		want := int32(int64(tt.hash&0x7fffffff) % big)
		assert.Equal(t, want, state.PartitionOf([]byte(tt.key), big), tt.key)
	}
	for _, key := range []string{"", "u1", "user-42", "\xff\xfe\xfd"} {
		for _, n := range []int32{1, 3, 8, 12} {
			p := state.PartitionOf([]byte(key), n)
			assert.True(t, p >= 0 && p < n, "%q over %d partitions: %d", key, n, p)
		}
	}
	assert.Panics(t, func() { state.PartitionOf([]byte("k"), 0) })
}

func TestTableLookupByKey(t *testing.T) {
	tbl := state.NewMemoryTable[string, int]()
	const partitions = 8
	ctx := t.Context()
	for i, k := range []string{"ann", "bob", "cid", "dee"} {
		p := state.PartitionOf([]byte(k), partitions)
		require.NoError(t, tbl.Partition(p).Put(ctx, k, i+1))
	}
	for i, k := range []string{"ann", "bob", "cid", "dee"} {
		v, ok, err := tbl.Lookup(ctx, partitions, k)
		require.NoError(t, err)
		require.True(t, ok, k)
		assert.Equal(t, i+1, v)
	}
	_, ok, err := tbl.Lookup(ctx, partitions, "eve")
	require.NoError(t, err)
	assert.False(t, ok)
	_, _, err = tbl.Lookup(ctx, 0, "ann")
	assert.ErrorContains(t, err, "partition count")

	ints := state.NewMemoryTable[int, int]()
	_, _, err = ints.Lookup(ctx, partitions, 7)
	assert.ErrorContains(t, err, "cannot encode a int key")
}
