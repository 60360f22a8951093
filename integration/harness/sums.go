package harness

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/state"
)

// SumTable is the Redis table of integration/worker -mode sum: per key of the input
// topic, "sum/<key>" (the running sum of its int64 values) and "cnt/<key>" (how many were
// added), in the partition the key's records come from. Its checks recompute both from
// the input read back from Kafka.
type SumTable struct {
	TB         testing.TB
	Addr, NS   string // redis-server and the table's namespace
	Topic      string // the input topic
	Partitions int
}

// Open opens the table on a new client (closed by the returned func): a fresh client
// does not carry dial errors from an outage in its pool.
func (s SumTable) Open() (*state.Table[string, int64], func()) {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DialTimeout: time.Second, ReadTimeout: 5 * time.Second})
	tbl, err := state.NewTable(c, s.NS, codec.String(), codec.Int64())
	require.NoError(s.TB, err)
	return tbl, func() { c.Close() }
}

// Applied returns the table's applied offset per partition (0: nothing applied).
func (s SumTable) Applied(ctx context.Context) (map[int32]int64, error) {
	tbl, done := s.Open()
	defer done()
	out := make(map[int32]int64, s.Partitions)
	for p := range int32(s.Partitions) {
		n, err := tbl.Applied(ctx, s.Topic, p)
		if err != nil {
			return nil, err
		}
		out[p] = n
	}
	return out, nil
}

// SumWindow compares committed with applied offsets between two worker lives: ahead counts
// partitions whose committed offset is beyond the table's (the group would skip records
// whose effects are not in the table: a loss); window is Σ(applied − committed) where the
// table is ahead: records already applied that the next worker must skip, not add again.
func SumWindow(committed, applied map[int32]int64) (window int64, ahead int) {
	for p, a := range applied {
		c := max(committed[p], 0) // -1001: nothing committed, the next worker starts at 0
		switch {
		case a > c:
			window += a - c
		case a < c:
			ahead++
		}
	}
	return window, ahead
}

// SumVerdict compares the table with the sums and counts recomputed from the input.
type SumVerdict struct {
	Records       int
	Keys          int
	DoubleCounts  int64 // Σ max(0, counted − records) over keys
	Losses        int64 // Σ max(0, records − counted) over keys
	SumMismatches int   // keys whose sum differs from the recomputed one
	Missing       int   // input keys with nothing in the table
	DataKeys      int   // data keys found in the table's namespace (want 2 × Keys)
	Examples      []string
}

func (v SumVerdict) String() string {
	return fmt.Sprintf("records=%d keys=%d double_counts=%d losses=%d sum_mismatch=%d missing_keys=%d table_keys=%d",
		v.Records, v.Keys, v.DoubleCounts, v.Losses, v.SumMismatches, v.Missing, v.DataKeys)
}

// AssertExact fails tb unless the table counted each of the records inputs exactly once
// into an exact sum for every input key.
func (v SumVerdict) AssertExact(tb testing.TB, records int) {
	tb.Helper()
	if len(v.Examples) > 0 {
		tb.Logf("first mismatches: %v", v.Examples)
	}
	assert.Equal(tb, records, v.Records, "input records read back")
	assert.Zero(tb, v.DoubleCounts, "double counts")
	assert.Zero(tb, v.Losses, "losses")
	assert.Zero(tb, v.SumMismatches, "keys whose sum differs from the input's")
	assert.Zero(tb, v.Missing, "keys missing from the table")
}

// CheckSums recomputes every key's sum and count from inputs (read back from the topic)
// and compares them with the table.
func (s SumTable) CheckSums(ctx context.Context, inputs []Rec) SumVerdict {
	s.TB.Helper()
	type agg struct{ sum, cnt int64 }
	want := make([]map[string]*agg, s.Partitions)
	for p := range want {
		want[p] = map[string]*agg{}
	}
	dec := codec.Int64()
	v := SumVerdict{Records: len(inputs)}
	for _, r := range inputs {
		val, err := dec.Decode(r.Value)
		require.NoError(s.TB, err, "input %d@%d", r.Partition, r.Offset)
		a := want[r.Partition][string(r.Key)]
		if a == nil {
			a = &agg{}
			want[r.Partition][string(r.Key)] = a
			v.Keys++
		}
		a.sum += val
		a.cnt++
	}
	tbl, done := s.Open()
	defer done()
	for p, m := range want {
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range m {
				if !yield(k) {
					return
				}
			}
		})
		tkeys := make([]string, 0, 2*len(keys))
		for _, k := range keys {
			tkeys = append(tkeys, "sum/"+k, "cnt/"+k)
		}
		vals, found, err := tbl.Partition(int32(p)).GetMany(ctx, tkeys)
		require.NoError(s.TB, err, "read the sums of partition %d", p)
		for i, k := range keys {
			w := m[k]
			if !found[2*i] && !found[2*i+1] {
				v.Missing++
			}
			sum, cnt := vals[2*i], vals[2*i+1]
			if cnt > w.cnt {
				v.DoubleCounts += cnt - w.cnt
			} else {
				v.Losses += w.cnt - cnt
			}
			if sum != w.sum {
				v.SumMismatches++
				if len(v.Examples) < 5 {
					v.Examples = append(v.Examples, fmt.Sprintf("p%d %s: sum %d want %d, count %d want %d", p, k, sum, w.sum, cnt, w.cnt))
				}
			}
		}
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	iter := c.Scan(ctx, 0, "{"+s.NS+":*}:k:*", 1000).Iterator()
	for iter.Next(ctx) {
		v.DataKeys++
	}
	require.NoError(s.TB, iter.Err(), "scan the table's keys")
	return v
}

// OutVerdict compares the sum worker's outputs (each record's key's count after it) with
// the table's counts.
type OutVerdict struct {
	Outputs, Keys int
	Repeats       int // outputs sent more than once (at-least-once)
	Gaps          int // counts in 1..n (n the table's count) never sent: lost outputs
	Beyond        int // counts sent above n: outputs of effects never made
}

func (v OutVerdict) String() string {
	return fmt.Sprintf("outputs=%d keys=%d repeats=%d gaps=%d beyond=%d", v.Outputs, v.Keys, v.Repeats, v.Gaps, v.Beyond)
}

// CheckOutputs reads topic out and compares each key's counts sent with its count in
// the table (found in the partition its inputs, read back, came from).
// With committed, the outputs are read read_committed (once no transaction is open).
func (s SumTable) CheckOutputs(ctx context.Context, brokers, out string, inputs []Rec, committed bool) OutVerdict {
	s.TB.Helper()
	partOf := map[string]int32{}
	for _, r := range inputs {
		partOf[string(r.Key)] = r.Partition
	}
	dec := codec.Int64()
	sent := map[string]map[int64]int{}
	var v OutVerdict
	var outs []Rec
	if committed {
		outs = ReadCommittedTopic(s.TB, brokers, out, s.Partitions, 2*time.Minute)
	} else {
		outs = ReadTopic(s.TB, brokers, out, s.Partitions, 2*time.Minute)
	}
	for _, r := range outs {
		n, err := dec.Decode(r.Value)
		require.NoError(s.TB, err, "output %d@%d", r.Partition, r.Offset)
		k := string(r.Key)
		if sent[k] == nil {
			sent[k] = map[int64]int{}
		}
		sent[k][n]++
		if sent[k][n] > 1 {
			v.Repeats++
		}
		v.Outputs++
	}
	v.Keys = len(sent)
	tbl, done := s.Open()
	defer done()
	for k, p := range partOf {
		n, _, err := tbl.Partition(p).Get(ctx, "cnt/"+k)
		require.NoError(s.TB, err, "count of %s", k)
		for c := int64(1); c <= n; c++ {
			if sent[k][c] == 0 {
				v.Gaps++
			}
		}
		for c := range sent[k] {
			if c > n || c < 1 {
				v.Beyond++
			}
		}
	}
	return v
}
