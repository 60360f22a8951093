package harness

import (
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
)

// EOSVerdict is the checker's result for one read_committed view of the output.
type EOSVerdict struct {
	Seq             SeqTally // by key and value, with per-key order
	Outputs         int
	Lost            int // inputs (partition, offset) without output
	Dups            int // Σ(count−1) over inputs
	Unexpected      int // outputs naming no input, or unparsable
	Mismatched      int // outputs naming an input but with another key or value
	PartitionOrder  int // an input partition's outputs not in offset order within an output partition
	SumMismatch     int // keys whose running sums differ from the input's
	AbortedVisible  int // read_committed records that the read_uncommitted log shows were rewritten later
	NotInLog        int // read_committed records absent from the read_uncommitted view
	ReadUncommitted int
	Aborted         int // read_uncommitted records not visible read_committed
}

func (v EOSVerdict) String() string {
	return fmt.Sprintf("outputs=%d lost=%d dups=%d unexpected=%d mismatched=%d partition_order_violations=%d key_order_violations=%d sum_mismatch=%d aborted_visible=%d read_uncommitted=%d aborted_records=%d",
		v.Outputs, v.Lost, v.Dups, v.Unexpected, v.Mismatched, v.PartitionOrder, v.Seq.OrderViolations, v.SumMismatch, v.AbortedVisible, v.ReadUncommitted, v.Aborted)
}

// CheckEOS compares a read_committed view of the output with the input. ru is the
// read_uncommitted view; with lastCopy, a read_committed record that is not the last
// copy of its input in ru counts as aborted_visible (valid when writers never overlap in
// time: one worker at a time, each killed and gone before the next starts).
func CheckEOS(inputs []Rec, rc, ru []TxnRec, lastCopy bool) EOSVerdict {
	v := EOSVerdict{Seq: TallySeq(inputs, PlainRecs(rc)), Outputs: len(rc), ReadUncommitted: len(ru)}
	type at struct {
		p int32
		o int64
	}
	in := make(map[at]Rec, len(inputs))
	for _, r := range inputs {
		in[at{r.Partition, r.Offset}] = r
	}
	count := make(map[at]int, len(inputs))
	lastPerPart := map[[2]int32]int64{} // (output partition, input partition) -> last input offset
	keySum := map[string][]int64{}
	for _, r := range rc {
		val, p, o, _, ok := r.Fields()
		if !ok {
			v.Unexpected++
			continue
		}
		src, ok := in[at{p, o}]
		if !ok {
			v.Unexpected++
			continue
		}
		if string(src.Key) != string(r.Key) || string(src.Value) != val {
			v.Mismatched++
		}
		count[at{p, o}]++
		k := [2]int32{r.Partition, p}
		if last, ok := lastPerPart[k]; ok && o <= last {
			v.PartitionOrder++
		}
		lastPerPart[k] = o
		n, _ := strconv.ParseInt(val, 10, 64)
		sums := keySum[string(r.Key)]
		prev := int64(0)
		if len(sums) > 0 {
			prev = sums[len(sums)-1]
		}
		keySum[string(r.Key)] = append(sums, prev+n)
	}
	for id := range in {
		switch c := count[id]; {
		case c == 0:
			v.Lost++
		case c > 1:
			v.Dups += c - 1
		}
	}
	want := map[string][]int64{}
	for _, r := range inputs { // partition by partition in offset order: per-key input order
		n, _ := strconv.ParseInt(string(r.Value), 10, 64)
		sums := want[string(r.Key)]
		prev := int64(0)
		if len(sums) > 0 {
			prev = sums[len(sums)-1]
		}
		want[string(r.Key)] = append(sums, prev+n)
	}
	for k, w := range want {
		if !slices.Equal(w, keySum[k]) {
			v.SumMismatch++
		}
	}
	for k := range keySum {
		if _, ok := want[k]; !ok {
			v.SumMismatch++
		}
	}

	// Read_uncommitted: the last copy of each input, and which positions exist.
	type pos struct {
		p int32
		o int64
	}
	last := map[at]pos{}
	inLog := map[pos]bool{}
	for _, r := range ru {
		inLog[pos{r.Partition, r.Offset}] = true
		if _, p, o, _, ok := r.Fields(); ok {
			last[at{p, o}] = pos{r.Partition, r.Offset} // ru is in offset order per partition
		}
	}
	committed := map[pos]bool{}
	for _, r := range rc {
		committed[pos{r.Partition, r.Offset}] = true
		if !inLog[pos{r.Partition, r.Offset}] {
			v.NotInLog++
		}
		if _, p, o, _, ok := r.Fields(); ok && lastCopy {
			if l, ok := last[at{p, o}]; ok && l != (pos{r.Partition, r.Offset}) {
				v.AbortedVisible++
			}
		}
	}
	for _, r := range ru {
		if !committed[pos{r.Partition, r.Offset}] {
			v.Aborted++
		}
	}
	return v
}

// AssertExactlyOnce fails tb unless v shows output == input exactly, in order.
func AssertExactlyOnce(tb testing.TB, view string, inputs int, v EOSVerdict) {
	tb.Helper()
	assert.Equal(tb, inputs, v.Outputs, "%s: output count == input count", view)
	assert.Zero(tb, v.Lost, "%s: inputs without output (first by key: %v)", view, v.Seq.Missing)
	assert.Zero(tb, v.Dups, "%s: duplicate outputs", view)
	assert.Zero(tb, v.Unexpected, "%s: outputs that name no input", view)
	assert.Zero(tb, v.Mismatched, "%s: outputs whose key or value differ from their input's", view)
	assert.Zero(tb, v.Seq.Lost+v.Seq.Dups+v.Seq.Unexpected, "%s: by key and value: lost %d, dups %d, unexpected %d", view, v.Seq.Lost, v.Seq.Dups, v.Seq.Unexpected)
	assert.Zero(tb, v.PartitionOrder, "%s: outputs of an input partition out of offset order", view)
	assert.Zero(tb, v.Seq.OrderViolations, "%s: keys whose values are out of input order", view)
	assert.Zero(tb, v.SumMismatch, "%s: keys whose running sum differs from the input's", view)
	assert.Zero(tb, v.AbortedVisible, "%s: aborted_visible (records of transactions that did not commit, seen read_committed)", view)
	assert.Zero(tb, v.NotInLog, "%s: read_committed records absent from the read_uncommitted log", view)
}

// SameRecords reports whether two views hold the same records at the same positions.
func SameRecords(a, b []TxnRec) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Partition != b[i].Partition || a[i].Offset != b[i].Offset || string(a[i].Value) != string(b[i].Value) || string(a[i].Key) != string(b[i].Key) {
			return false
		}
	}
	return true
}
