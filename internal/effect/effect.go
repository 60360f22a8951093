// Package effect holds a batch's state writes back until the batch's outputs are
// acknowledged (at-least-once) or committed (exactly-once). The processor puts a Batch in
// its handler's context; state.Table.Apply finds it there and stages its writes instead
// of making them, and the table's reads through that context see what is staged (also
// what earlier batches of the partition staged, when the Batch follows theirs). Once
// the outputs are acknowledged the processor makes the writes (Commit) and only then
// commits the input offsets; in exactly-once mode the writes of a transaction's batches
// are made once it commits. When the batch is handled again, its records are
// dead-lettered or its transaction aborts, the writes are dropped.
//
// A Batch is staged by one partition's worker goroutine, but a handler may read through
// it from goroutines of its own, and in exactly-once mode the transaction's commit makes
// or drops it on another goroutine, so it is safe for concurrent use.
package effect

import (
	"context"
	"sync"
)

// Write is one staged write of a key: Key identifies the store and the key within it
// (a comparable value), Value is the new value, or Deleted is set.
type Write struct {
	Key     any
	Value   any
	Deleted bool
}

// Batch is one batch's staged writes and the functions that make them.
type Batch struct {
	mu     sync.Mutex
	writes []Write
	latest map[any]int // key -> index in writes of its last write
	apply  []func(context.Context) error
	// prev is the batch staged before this one and not made yet (see Follow): its writes
	// show through where this batch has none.
	prev *Batch
}

// Mark is a point in a Batch to roll back to: what was staged before a handler call
// that failed is kept, what it staged is dropped.
type Mark struct{ writes, applies int }

type ctxKey struct{}

// NewContext returns ctx carrying b.
func NewContext(ctx context.Context, b *Batch) context.Context {
	return context.WithValue(ctx, ctxKey{}, b)
}

// FromContext returns the Batch ctx carries, or nil.
func FromContext(ctx context.Context) *Batch {
	b, _ := ctx.Value(ctxKey{}).(*Batch)
	return b
}

// Stage records writes (visible to Lookup at once) and apply, which makes them and is
// called by Commit, after every apply staged before it.
func (b *Batch) Stage(writes []Write, apply func(context.Context) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.latest == nil {
		b.latest = make(map[any]int, len(writes))
	}
	for _, w := range writes {
		b.latest[w.Key] = len(b.writes)
		b.writes = append(b.writes, w)
	}
	b.apply = append(b.apply, apply)
}

// Follow makes b read through to prev: prev's staged writes, until prev is committed
// or dropped, show through b where b has no write of the key. The exactly-once mode
// makes a batch's writes only once its transaction commits, so the next batches of the
// partition must read what earlier ones staged. prev must be committed before b.
func (b *Batch) Follow(prev *Batch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prev = prev
}

// Lookup returns the staged write of key, if any: b's own, else that of the batches b
// follows.
func (b *Batch) Lookup(key any) (w Write, ok bool) {
	for b != nil {
		b.mu.Lock()
		i, ok := b.latest[key]
		if ok {
			w := b.writes[i]
			b.mu.Unlock()
			return w, true
		}
		prev := b.prev
		b.mu.Unlock()
		b = prev
	}
	return Write{}, false
}

// Staged reports whether b, or a batch it follows, has writes staged.
func (b *Batch) Staged() bool {
	for b != nil {
		b.mu.Lock()
		n, prev := len(b.writes), b.prev
		b.mu.Unlock()
		if n > 0 {
			return true
		}
		b = prev
	}
	return false
}

// Pending reports how many staged applies Commit has not made yet.
func (b *Batch) Pending() int {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.apply)
}

// Mark returns the current point of b (the zero Mark for a nil b).
func (b *Batch) Mark() Mark {
	if b == nil {
		return Mark{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return Mark{writes: len(b.writes), applies: len(b.apply)}
}

// Rollback drops what was staged after m.
func (b *Batch) Rollback(m Mark) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if m.writes >= len(b.writes) && m.applies >= len(b.apply) {
		return
	}
	clear(b.writes[m.writes:])
	b.writes = b.writes[:m.writes]
	clear(b.apply[m.applies:])
	b.apply = b.apply[:m.applies]
	clear(b.latest)
	for i, w := range b.writes {
		b.latest[w.Key] = i
	}
}

// Drop forgets everything staged, and stops reading through the batches b follows.
func (b *Batch) Drop() {
	if b == nil {
		return
	}
	b.Rollback(Mark{})
	b.mu.Lock()
	b.prev = nil
	b.mu.Unlock()
}

// Commit makes the staged writes, in the order they were staged. An apply that fails
// stays staged with those after it, so Commit can be called again; the ones made are
// not made twice.
func (b *Batch) Commit(ctx context.Context) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.apply) > 0 {
		if err := b.apply[0](ctx); err != nil {
			return err
		}
		b.apply[0] = nil
		b.apply = b.apply[1:]
	}
	// What b followed was made before it: nothing shows through any more.
	b.writes, b.latest, b.prev = nil, nil, nil
	return nil
}
