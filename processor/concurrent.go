package processor

import (
	"container/heap"
	"math"

	"github.com/samsa-go/samsa/internal/record"
)

// Ordering is what a processor keeps in order among a partition's records when it
// handles them concurrently (Config.Concurrency above 1).
type Ordering string

const (
	// ByKey handles the records of one key (the record key's bytes; the records without
	// a key count as one key) in offset order, one Handle call at a time, and records of
	// different keys concurrently. It is the default.
	ByKey Ordering = "key"
	// ByPartition handles a partition's batches one at a time, whatever Concurrency says.
	ByPartition Ordering = "partition"
	// Unordered handles every record in a Handle call of its own, concurrently with the
	// others of its partition.
	Unordered Ordering = "unordered"
)

// units runs each batch of a partition as units handled concurrently: the records of one
// key (ByKey) or each record (Unordered). A unit starts once the unit of the same key in
// an earlier batch has finished and its outputs were handed to the producer, and while
// fewer than limit units of the partition run. Its outputs are produced as soon as it
// finishes, so a key held by a slow handler (or retrying) holds back its own records and
// its batch's commit, not the other keys' outputs. Batches still settle in batch order:
// the committed offset never passes a record whose outputs are not acknowledged.
//
// A units value belongs to its pipeline's worker goroutine; units run on goroutines of
// their own and report to finished.
type units[K, V any] struct {
	limit    int
	ordering Ordering
	running  int
	ready    readyUnits[K, V]      // may start, waiting for one of the limit places
	batches  uint64                // batches dispatched: the next one's sequence number
	marks    map[unitKey]*doneMark // per key, its last unit not yet recorded done
	// stopAt is the sequence number of the first batch a unit of which failed: units of
	// it and later batches no longer start (their key's order would break; the batches
	// before it still finish and settle).
	stopAt   uint64
	tails    map[unitKey]*unit[K, V] // per key, its last unit that has not finished
	finished chan *unit[K, V]        // buffered: limit places, so a unit never blocks on it
	free     []*runner[K, V]         // runners of finished units, for the next ones
	base     *runner[K, V]           // what a unit's runner copies
	// skip is what the partition's last commit recorded done beyond its offset (see
	// doneset.go); skipped counts the records skipped for it.
	skip    doneSkip
	skipped int
}

type unitKey struct {
	key  string
	null bool
}

// unit is the records of one key in one batch (or one record, Unordered), in offset order.
type unit[K, V any] struct {
	f      *flight
	seq    uint64 // its batch's sequence number: units of older batches start first
	key    unitKey
	inputs []record.Message
	next   *unit[K, V] // the key's unit in a later batch, started once this one finishes
	run    *runner[K, V]
	outs   []record.Message
	err    error
	mark   *doneMark
}

// doneMark is a unit's place in what a commit may record done (see doneset.go): its
// records count as done once its outputs are acknowledged (or it had none) and every
// earlier unit of its key is done, so what is recorded never leaves a gap in a key's
// records that a next owner would handle after a later one.
type doneMark struct {
	f        *flight
	key      unitKey
	inputs   []record.Message
	acked    bool // outputs acknowledged, or none to produce
	prevDone bool // every earlier unit of the key not settled is recorded done
	next     *doneMark
}

func newUnits[K, V any](limit int, ordering Ordering, base *runner[K, V]) *units[K, V] {
	return &units[K, V]{limit: limit, ordering: ordering, tails: map[unitKey]*unit[K, V]{},
		marks: map[unitKey]*doneMark{}, finished: make(chan *unit[K, V], limit), base: base, stopAt: math.MaxUint64}
}

// dispatch splits f's inputs into units and starts those that may start; it returns
// how many units f has (none: every record was done already). With ByKey, f.inputs is
// regrouped so that each unit's records are contiguous (the records done already go
// last).
func (u *units[K, V]) dispatch(f *flight) int {
	skipped := u.skipDone(f)
	u.batches++
	var parts []*unit[K, V]
	if u.ordering == Unordered {
		for i := range f.inputs {
			if skipped == nil || !skipped[i] {
				parts = append(parts, &unit[K, V]{f: f, inputs: f.inputs[i : i+1 : i+1]})
			}
		}
	} else {
		parts = u.byKey(f, skipped)
	}
	f.pending, f.unfinished = len(parts), len(parts)
	for _, p := range parts {
		p.seq = u.batches
		p.mark = &doneMark{f: f, key: p.key, inputs: p.inputs, prevDone: true}
		f.marks = append(f.marks, p.mark)
		if u.ordering == Unordered {
			heap.Push(&u.ready, p)
			continue
		}
		if last := u.marks[p.key]; last != nil {
			last.next, p.mark.prevDone = p.mark, false
		}
		u.marks[p.key] = p.mark
		if t := u.tails[p.key]; t != nil {
			t.next = p
		} else {
			heap.Push(&u.ready, p)
		}
		u.tails[p.key] = p
	}
	u.start()
	return len(parts)
}

// markDone records m's records done once m is acknowledged and its key's earlier units
// are done, and with it those of the key's later units that were waiting for it.
func (u *units[K, V]) markDone(m *doneMark) {
	for ; m != nil && m.acked && m.prevDone; m = m.next {
		m.f.doneUnits = append(m.f.doneUnits, m.inputs)
		if u.marks[m.key] == m {
			delete(u.marks, m.key)
		}
		if m.next != nil {
			m.next.prevDone = true
		}
	}
}

// settled counts f's units done when f settles (its offsets are stored): a key's
// later units no longer wait for them.
func (u *units[K, V]) settled(f *flight) {
	for _, m := range f.marks {
		m.prevDone = true
		if !m.acked {
			m.acked = true
			u.markDone(m)
		}
	}
}

// skipDone finds the records of f that the last commit recorded done (a previous owner
// handled them and had their outputs acknowledged) and counts them done: skipped[i]
// reports f.inputs[i] skipped (nil: none is).
func (u *units[K, V]) skipDone(f *flight) (skipped []bool) {
	if len(u.skip) == 0 {
		return nil
	}
	var done []record.Message
	for i := range f.inputs {
		if m := &f.inputs[i]; u.skip.has(m) {
			if skipped == nil {
				skipped = make([]bool, len(f.inputs))
			}
			skipped[i] = true
			done = append(done, *m)
		}
	}
	if len(done) > 0 {
		f.doneUnits = append(f.doneUnits, done)
		u.skipped += len(done)
	}
	for _, n := range f.next {
		if runs := u.skip[n.Topic]; len(runs) > 0 && runs[len(runs)-1].to <= n.Offset {
			delete(u.skip, n.Topic) // no later record of the topic is recorded done
		}
	}
	return skipped
}

// byKey groups f's inputs but the skipped ones by key, in the order of each key's first
// record; the skipped ones go last, in no unit.
func (u *units[K, V]) byKey(f *flight, skipped []bool) []*unit[K, V] {
	index := make(map[unitKey]int, len(f.inputs))
	var keys []unitKey
	var counts []int
	of := make([]int, len(f.inputs)) // the group of each input, -1 when skipped
	for i := range f.inputs {
		if skipped != nil && skipped[i] {
			of[i] = -1
			continue
		}
		m := &f.inputs[i]
		k := unitKey{key: string(m.Key), null: m.Key == nil}
		g, ok := index[k]
		if !ok {
			g = len(keys)
			index[k] = g
			keys = append(keys, k)
			counts = append(counts, 0)
		}
		counts[g]++
		of[i] = g
	}
	grouped := make([]record.Message, len(f.inputs))
	at := make([]int, len(keys)) // where each group's next record goes
	parts := make([]*unit[K, V], len(keys))
	pos := 0
	for g, n := range counts {
		at[g] = pos
		parts[g] = &unit[K, V]{f: f, key: keys[g], inputs: grouped[pos : pos+n : pos+n]}
		pos += n
	}
	for i := range f.inputs {
		if of[i] < 0 {
			grouped[pos] = f.inputs[i]
			pos++
			continue
		}
		grouped[at[of[i]]] = f.inputs[i]
		at[of[i]]++
	}
	f.inputs = grouped
	return parts
}

// start starts ready units while fewer than limit run, each with its batch's context.
func (u *units[K, V]) start() {
	for u.running < u.limit && len(u.ready) > 0 && u.ready[0].seq < u.stopAt {
		p := heap.Pop(&u.ready).(*unit[K, V])
		u.running++
		p.run = u.runner()
		go func() {
			p.outs, p.err = p.run.handle(p.f.ctx, p.inputs)
			u.finished <- p
		}()
	}
}

// runner returns a runner for a unit: the pipeline's, with its own reused records.
func (u *units[K, V]) runner() *runner[K, V] {
	if n := len(u.free); n > 0 {
		r := u.free[n-1]
		u.free = u.free[:n-1]
		return r
	}
	r := *u.base
	r.records = nil
	r.skipped = 0
	return &r
}

// done takes back a finished unit's place and runner, and returns the key's next unit to
// the ready ones. The caller has handed the unit's outputs to the producer first.
func (u *units[K, V]) done(p *unit[K, V]) {
	u.running--
	u.base.skipped += p.run.skipped
	p.run.skipped = 0
	u.free = append(u.free, p.run)
	p.run = nil
	if u.ordering != Unordered {
		if u.tails[p.key] == p {
			delete(u.tails, p.key)
		}
		if p.next != nil {
			heap.Push(&u.ready, p.next)
			p.next = nil
		}
	}
	u.start()
}

// wait waits for the units still running (their handler calls) to return.
func (u *units[K, V]) wait() {
	for u.running > 0 {
		p := <-u.finished
		u.running--
		if p.outs != nil {
			u.base.recycle(p.outs)
		}
	}
}

// readyUnits is a heap of the units that may start, the oldest batch's first: a batch
// settles once all its units are done, so its units go before later batches' (a key's
// unit freed by its predecessor does not wait behind every unit dispatched since).
type readyUnits[K, V any] []*unit[K, V]

func (r readyUnits[K, V]) Len() int           { return len(r) }
func (r readyUnits[K, V]) Less(i, j int) bool { return r[i].seq < r[j].seq }
func (r readyUnits[K, V]) Swap(i, j int)      { r[i], r[j] = r[j], r[i] }
func (r *readyUnits[K, V]) Push(x any)        { *r = append(*r, x.(*unit[K, V])) }
func (r *readyUnits[K, V]) Pop() any {
	old := *r
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*r = old[:len(old)-1]
	return p
}
