package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/state"
)

// TestTableCompare: table compare counts keys only one side has and keys whose values
// differ, exits 3 when the tables differ, and reads only its namespaces: a namespace
// with glob characters does not match its neighbours, and clearing it leaves them alone.
func TestTableCompare(t *testing.T) {
	_, redisAddr := realStack(t)
	ctx := context.Background()
	base := stack.UniqueName("cmp")
	nsA, nsB, neighbour := base+"*[a]", base+"-b", base+"x[a]"
	a, rc := newTable(t, redisAddr, nsA)
	b, _ := newTable(t, redisAddr, nsB)
	n, _ := newTable(t, redisAddr, neighbour)
	put := func(tbl *state.Table[string, int64], p int32, kv map[string]int64) {
		var es []state.Entry[string, int64]
		for k, v := range kv {
			es = append(es, state.Entry[string, int64]{Key: k, Value: v})
		}
		require.NoError(t, tbl.Apply(ctx, p, es, nil, map[string]int64{"in": 7}))
	}
	put(a, 0, map[string]int64{"same": 1, "differs": 2, "only-a": 3})
	put(b, 0, map[string]int64{"same": 1, "differs": 20, "only-b": 4})
	put(a, 1, map[string]int64{"x": 1})
	put(b, 1, map[string]int64{"x": 1})
	put(n, 0, map[string]int64{"neighbour": 1})
	put(n, 5, map[string]int64{"neighbour": 1})

	stdout, _, code := samsa(t, "", "table", "compare", "-redis", redisAddr, "-a", nsA, "-b", nsB, "-o", "json")
	require.Equal(t, 3, code)
	var res struct {
		Equal      bool                  `json:"equal"`
		Verdict    string                `json:"verdict"`
		Partitions []state.PartitionDiff `json:"partitions"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assert.False(t, res.Equal)
	assert.Equal(t, "different: same applied offsets, different data", res.Verdict)
	require.Len(t, res.Partitions, 2, "partition 5 is the neighbour's")
	p0 := res.Partitions[0]
	assert.Equal(t, state.PartitionDiff{Partition: 0, AppliedA: map[string]int64{"in": 7}, AppliedB: map[string]int64{"in": 7},
		KeysA: 3, KeysB: 3, OnlyA: 1, OnlyB: 1, Differ: 1, Examples: []string{"differs", "only-a", "only-b"}}, p0)
	assert.True(t, res.Partitions[1].Equal())

	ta, err := state.NewTableAdmin(rc, nsA)
	require.NoError(t, err)
	deleted, err := ta.ClearPartition(ctx, 0)
	require.NoError(t, err)
	assert.Equal(t, 4, deleted, "3 keys and the applied offsets")
	_, found, err := n.Partition(0).Get(ctx, "neighbour")
	require.NoError(t, err)
	assert.True(t, found, "clearing %q deleted its neighbour %q's data", nsA, neighbour)

	_, stderr, code := samsa(t, "", "table", "compare", "-redis", redisAddr, "-a", "bad{ns}", "-b", nsB)
	requireOneLine(t, code, stderr, 2, `namespace "bad{ns}"`)
	_, stderr, code = samsa(t, "", "table", "compare", "-redis", "127.0.0.1:1", "-timeout", "2s", "-a", nsA, "-b", nsB)
	requireOneLine(t, code, stderr, 1, "redis at 127.0.0.1:1")
}
