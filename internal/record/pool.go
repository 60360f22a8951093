package record

import "sync"

// Pool keeps message slices for reuse by any goroutine: a steady stream of batches then
// allocates no arrays. What stays unused is freed by the garbage collector within two
// cycles, so an idle pool, or one shared by many partitions, holds nothing for long.
// The zero value is ready to use.
type Pool struct{ p sync.Pool }

// Get returns an empty slice with room for at least n messages. A pooled array more than
// four times that large is left to the collector rather than handed out: a quiet
// partition asking for a few records must not hold a busy one's array (about 128 bytes a
// message, uncounted by the byte budget).
func (p *Pool) Get(n int) []Message {
	if v, _ := p.p.Get().(*[]Message); v != nil && cap(*v) >= n && cap(*v) <= 4*max(n, 16) {
		return (*v)[:0]
	}
	return make([]Message, 0, n)
}

// Put gives msgs back once nothing refers to its messages any more; their keys, values
// and headers are released at once.
func (p *Pool) Put(msgs []Message) {
	if cap(msgs) == 0 {
		return
	}
	msgs = msgs[:cap(msgs)]
	clear(msgs)
	msgs = msgs[:0]
	p.p.Put(&msgs)
}
