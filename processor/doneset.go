package processor

import (
	"encoding/base64"
	"encoding/binary"
	"slices"
	"strings"

	"github.com/samsa-go/samsa/internal/record"
)

// With Concurrency, records of a partition finish out of order: when a batch cannot
// settle (a key held by a slow or retrying handler), later batches' records may be
// handled and their outputs acknowledged, but their offsets cannot be committed past the
// held record. So that a partition's next owner does not handle them again, a commit
// carries them in its metadata: donePrefix and, base64, varint pairs (gap, length) of
// the runs of done offsets at or after the committed one (gap from the end of the
// previous run, or from the committed offset). A record counts as done only when every
// earlier record of its key is (see doneMark), so a next owner that skips them handles
// each key's remaining records in order. Runs that do not fit in maxDoneMetadata bytes are
// left out: their records are handled again, as without the metadata.
const (
	donePrefix      = "samsa:done="
	maxDoneMetadata = 3000 // Kafka's offset.metadata.max.bytes is 4096 by default
)

// doneRun is a run of consecutive done offsets: [from, to).
type doneRun struct{ from, to int64 }

// encodeDone returns the metadata for offsets (of one topic-partition, any order, each
// at or after base), or "" when there are none.
func encodeDone(base int64, offsets []int64) string {
	if len(offsets) == 0 {
		return ""
	}
	slices.Sort(offsets)
	var buf []byte
	var scratch [2 * binary.MaxVarintLen64]byte
	prev := base
	for i := 0; i < len(offsets); {
		j := i + 1
		for j < len(offsets) && offsets[j] <= offsets[j-1]+1 {
			j++
		}
		from, to := offsets[i], offsets[j-1]+1
		n := binary.PutUvarint(scratch[:], uint64(from-prev))
		n += binary.PutUvarint(scratch[n:], uint64(to-from))
		if base64.RawURLEncoding.EncodedLen(len(buf)+n)+len(donePrefix) > maxDoneMetadata {
			break
		}
		buf = append(buf, scratch[:n]...)
		prev = to
		i = j
	}
	if len(buf) == 0 {
		return ""
	}
	return donePrefix + base64.RawURLEncoding.EncodeToString(buf)
}

// decodeDone parses metadata written by encodeDone for a commit of offset base. It
// returns nil for other metadata, or metadata it cannot parse.
func decodeDone(base int64, md string) []doneRun {
	v, ok := strings.CutPrefix(md, donePrefix)
	if !ok {
		return nil
	}
	buf, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return nil
	}
	var runs []doneRun
	prev := base
	for len(buf) > 0 {
		gap, n := binary.Uvarint(buf)
		if n <= 0 {
			return nil
		}
		length, m := binary.Uvarint(buf[n:])
		if m <= 0 || length == 0 {
			return nil
		}
		buf = buf[n+m:]
		from := prev + int64(gap)
		runs = append(runs, doneRun{from, from + int64(length)})
		prev = from + int64(length)
	}
	return runs
}

// doneSkip is, per topic of a slot, what its last commit recorded done after the
// committed offset: records to skip (their outputs are acknowledged already).
type doneSkip map[string][]doneRun

// has reports whether m is recorded done.
func (d doneSkip) has(m *record.Message) bool {
	runs := d[m.Topic]
	i, _ := slices.BinarySearchFunc(runs, m.Offset, func(r doneRun, off int64) int {
		switch {
		case r.to <= off:
			return -1
		case r.from > off:
			return 1
		}
		return 0
	})
	return i < len(runs) && runs[i].from <= m.Offset && m.Offset < runs[i].to
}

// readDone returns the done records the committed offsets' metadata records.
func readDone(committed []record.Offset) doneSkip {
	d := doneSkip{}
	for _, c := range committed {
		if runs := decodeDone(c.Offset, c.Metadata); len(runs) > 0 {
			d[c.Topic] = runs
		}
	}
	return d
}

// doneAfter returns, per topic of next, the metadata of the records of the unsettled
// batches (from) that are done (their outputs acknowledged, or none to produce) at or
// after next's offset, set into next.
func doneAfter(next []record.Offset, from []*flight) {
	for i := range next {
		var offs []int64
		for _, f := range from {
			for _, u := range f.doneUnits {
				for k := range u {
					if u[k].Topic == next[i].Topic && u[k].Offset >= next[i].Offset {
						offs = append(offs, u[k].Offset)
					}
				}
			}
		}
		next[i].Metadata = encodeDone(next[i].Offset, offs)
	}
}
