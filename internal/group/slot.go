package group

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/internal/record"
)

// Slot is partition number ID of every subscribed topic, owned by this member for one
// assignment. Its worker reads records with Ready, Peek and Take, and stores the offsets of
// finished work with Store.
//
// Fetched records wait in the slot in chunks of at most Config.TakeRecords records (and
// about a quarter of the slot's share of the budget): the poll goroutine appends
// to the newest chunk and the worker takes the oldest one whole, so a record is copied
// once on its way from librdkafka to a handler's batch.
//
// The slot counts the bytes it holds: records queued, plus what the worker holds for
// them after Take (the taken records and their outputs, declared with Hold) until it
// gives them back with Release, once the outputs are acknowledged; the engine adds up
// every slot's count. When the slots together hold Config.BufferBytes, a slot at its
// share holds the poll goroutine back: it stops polling until a worker releases enough,
// so librdkafka keeps what it prefetched and stops fetching once its own queue
// (queued.max.messages.kbytes) is full, as a loop that produces on its poll goroutine
// waits on a full producer queue. A slot below its share never holds the poll goroutine
// back, so a partition whose worker is slow cannot stall the others. A slot that stays at
// its share for holdBack (a worker slower than the fetch, not one waiting for
// acknowledgements) is paused, and resumed once it is below half of its share: a pause
// makes librdkafka drop what it had prefetched for the partition, which is then fetched
// again, so pausing a partition that drains in a few milliseconds would cost a fetch
// round trip each time.
type Slot struct {
	// ID is the partition number, the same in every co-partitioned topic.
	ID int32
	// Epoch grows with every assignment this engine receives, so a slot revoked and
	// assigned again has a higher epoch than before.
	Epoch uint64

	e      *Engine
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	closed atomic.Bool // ownership ended: records are dropped, stores rejected
	// stuck: the worker was reported stuck on shutdown; the final revoke does not wait
	// for it a second time.
	stuck atomic.Bool

	mu     sync.Mutex
	parts  []record.TopicPartition
	chunks []chunk // oldest first; only the last one may still be filling
	bytes  int64   // counted: records queued, taken and not released, outputs held
	paused bool    // wanted: the slot stayed over its share and waits to drain
	hint   int     // capacity of the next chunk: the length of the last one taken
	ready  chan struct{}
	ended  bool // the worker returned: its bytes were given back, pushes are dropped
	stored map[string]int64
	// storedMeta is the metadata stored with stored's offsets, per topic.
	storedMeta map[string]string

	pausedInClient bool // what librdkafka was last told (Pause/Resume); under Engine.mu

	// next is, per topic, the offset after the last record handed to the slot; poll
	// goroutine only. refetched counts records dropped for being below it.
	next      []topicOffset
	refetched int64
}

type topicOffset struct {
	topic  string
	offset int64
}

// chunk is a run of queued records that a worker takes at once.
type chunk struct {
	msgs  []record.Message
	bytes int64
	first time.Time // when its first record was queued
	full  bool      // no more records go in: take records or a quarter of the share
}

func newSlot(e *Engine, id int32, epoch uint64, parts []record.TopicPartition) *Slot {
	ctx, cancel := context.WithCancel(context.Background())
	return &Slot{
		ID:         id,
		Epoch:      epoch,
		e:          e,
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
		parts:      parts,
		ready:      make(chan struct{}, 1),
		stored:     make(map[string]int64),
		storedMeta: make(map[string]string),
	}
}

// Context is cancelled when the slot is revoked, lost, or the engine stops. The worker
// then finishes what it has in flight, stores its offsets and returns.
func (s *Slot) Context() context.Context { return s.ctx }

// Lost reports whether ownership ended without a clean revoke (or the revoke wait timed
// out): stores are rejected and work in flight should be abandoned.
func (s *Slot) Lost() bool { return s.closed.Load() }

// Partitions lists the slot's topic-partitions, one per subscribed topic.
func (s *Slot) Partitions() []record.TopicPartition {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]record.TopicPartition(nil), s.parts...)
}

// Ready is signalled when the slot goes from empty to holding records and when a chunk
// fills up. A worker calls Peek after every wake-up and before it waits again, so no
// signal is lost.
func (s *Slot) Ready() <-chan struct{} { return s.ready }

// Peek reports how many records the oldest chunk holds (at most Config.TakeRecords),
// when its first record was queued, and whether it is full (no more records go in); n is
// 0 when the slot is empty.
func (s *Slot) Peek() (n int, first time.Time, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.chunks) == 0 {
		return 0, time.Time{}, false
	}
	c := &s.chunks[0]
	return len(c.msgs), c.first, c.full
}

// Take removes and returns the oldest chunk, in offset order per topic, and its size in
// bytes (nil, 0 when the slot is empty). The bytes stay counted against the slot until
// the worker Releases them. The slice is the caller's: the slot never touches it again
// unless it is given back with Recycle.
func (s *Slot) Take() ([]record.Message, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.chunks) == 0 {
		return nil, 0
	}
	c := s.chunks[0]
	s.chunks[0] = chunk{}
	s.chunks = s.chunks[1:]
	if len(s.chunks) == 0 {
		s.chunks = nil // let the array go; the next push starts a new one
	}
	// A chunk of a busy partition fills up; one of a quiet partition holds what arrived
	// within the batch wait: size the next one alike, so neither grows nor wastes much.
	s.hint = max(len(c.msgs), 16)
	return c.msgs, c.bytes
}

// Hold counts n more bytes against the slot (a batch's outputs, until they are
// acknowledged).
func (s *Slot) Hold(n int64) {
	s.mu.Lock()
	if !s.ended {
		s.bytes += n
		s.e.buffered.Add(n)
	}
	s.mu.Unlock()
}

// Release gives back n bytes counted by Take or Hold. It wakes the poll goroutine if it
// holds back, and resumes a paused slot below half of its share.
func (s *Slot) Release(n int64) {
	share := s.e.slotShare()
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.bytes -= n
	s.e.buffered.Add(-n)
	resume := s.paused && s.bytes <= share/2
	if resume {
		s.paused = false
	}
	s.mu.Unlock()
	s.e.wake()
	if resume {
		s.e.syncPause(s)
	}
}

// mustWait reports whether a push to the slot must wait: the slots together hold the
// whole budget and this one (not paused) holds at least its share.
func (s *Slot) mustWait(share, budget int64) bool {
	if s.e.buffered.Load() < budget {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.atShare(share)
}

// atShare reports whether the slot, neither paused nor ended, holds at least share.
// Called with s.mu held.
func (s *Slot) atShare(share int64) bool { return !s.paused && !s.ended && s.bytes >= share }

// end gives back what the slot still counts once its worker has returned (records it
// never took, batches it abandoned); later pushes are dropped, and the slot's partitions
// are paused so that librdkafka does not fetch records nobody takes (a slot revoked or
// rewound is closed by then and left alone; one assigned again is resumed on assign).
func (s *Slot) end() {
	s.mu.Lock()
	s.e.buffered.Add(-s.bytes)
	s.bytes = 0
	s.ended = true
	s.chunks = nil
	s.paused = true
	s.mu.Unlock()
	s.e.wake()
	s.e.syncPause(s)
}

// Share is the slot's share of the budget: once the slots hold the budget together, a slot
// at its share holds the poll goroutine back. It changes as slots are assigned and
// revoked.
func (s *Slot) Share() int64 { return s.e.slotShare() }

// Recycle gives back a slice returned by Take once nothing refers to its records any
// more, so a slot can fill it again instead of allocating (the engine's slots share one
// pool). Optional.
func (s *Slot) Recycle(msgs []record.Message) { s.e.chunks.Put(msgs) }

// Buffered returns the bytes the slot counts: records queued and what the worker holds.
func (s *Slot) Buffered() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// push appends m (size bytes) and reports whether the poll goroutine must hold back
// (Engine.holdBack) before it polls again. A chunk is full at take records or a quarter
// of the share, so that a batch never holds most of what its partition may buffer.
// Called on the poll goroutine only.
func (s *Slot) push(m *record.Message, size int64, take int, share, budget int64) (wait bool) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return false // nobody takes it: the next owner reads it from the committed offset
	}
	signal := false
	if n := len(s.chunks); n == 0 || s.chunks[n-1].full {
		if s.hint == 0 {
			s.hint = min(take, 256)
		}
		s.chunks = append(s.chunks, chunk{msgs: s.e.chunks.Get(s.hint), first: time.Now()})
		signal = n == 0
	}
	c := &s.chunks[len(s.chunks)-1]
	c.msgs = append(c.msgs, *m)
	c.bytes += size
	s.bytes += size
	total := s.e.buffered.Add(size)
	if len(c.msgs) >= take || c.bytes >= share/4 {
		c.full = true
		signal = true
	}
	wait = total >= budget && s.atShare(share)
	s.mu.Unlock()
	if signal {
		select {
		case s.ready <- struct{}{}:
		default:
		}
	}
	return wait
}

// holdBack bounds how long the poll goroutine waits for a slot at its share to drain
// before it pauses the slot. A worker that is only waiting for its outputs'
// acknowledgements releases bytes within a produce round trip; one whose handler is
// slower than the fetch does not, and its partitions are paused so the others go on.
const holdBack = 100 * time.Millisecond

// holdBack runs on the poll goroutine when a push left the slots holding the whole
// budget and s at least its share: it stops polling until a worker releases enough (or s
// drops below its share), and pauses s if that has not happened after holdBack. It
// returns at once when ctx ends or s's ownership ends.
func (e *Engine) holdBack(ctx context.Context, s *Slot) {
	share, budget := e.slotShare(), e.budget.Load()
	t := time.NewTimer(holdBack)
	defer t.Stop()
	for s.mustWait(share, budget) {
		if s.closed.Load() {
			return
		}
		select {
		case <-e.drained:
			continue
		case <-ctx.Done():
			return
		case <-s.done: // the worker returned: nothing more will be released
			return
		case <-t.C:
		}
		s.mu.Lock()
		pause := s.atShare(share)
		if pause {
			s.paused = true
		}
		s.mu.Unlock()
		if pause {
			e.syncPause(s)
		}
		return
	}
}

// wake tells the poll goroutine, if it holds back, that a slot gave bytes back.
func (e *Engine) wake() {
	select {
	case e.drained <- struct{}{}:
	default:
	}
}

// advance reports whether a record of topic at offset is new to the slot, and moves the
// slot's position past it. Within one ownership a partition's records reach the slot in
// offset order, each once; librdkafka can hand over a record a second time after a pause
// that raced with the poll returning it (the pause notes the application's position
// before that record was returned, and the fetch resumes there). Without this check the
// record would be handled twice and its outputs produced twice, with no fault at all.
// A jump back of more than one record is not that race: it is logged as a warning (after
// a log truncation, an unclean leader election, the records at offsets reused below the
// position would be dropped too). Called on the poll goroutine only.
func (s *Slot) advance(topic string, offset int64) bool {
	for i := range s.next {
		t := &s.next[i]
		if t.topic != topic {
			continue
		}
		if offset < t.offset {
			if t.offset-offset > 1 {
				s.e.log.Warn("group: a record far below the partition's position was dropped as handed over already",
					"topic", topic, "partition", s.ID, "offset", offset, "expected", t.offset)
			}
			s.refetched++
			if s.refetched == 1 || s.refetched%10000 == 0 {
				s.e.log.Debug("group: dropped records fetched again", "topic", topic, "partition", s.ID,
					"offset", offset, "expected", t.offset, "dropped", s.refetched)
			}
			return false
		}
		t.offset = offset + 1
		return true
	}
	s.next = append(s.next, topicOffset{topic: topic, offset: offset + 1})
	return true
}

// Store records the offsets of the next records to read (last processed + 1), to be
// committed asynchronously and on revoke. It returns ErrNotOwned once the slot's ownership
// ended; the caller drops the offsets.
func (s *Slot) Store(offsets ...record.Offset) error {
	return s.e.store(s, offsets)
}

func (s *Slot) storedOffsets() []kafka.TopicPartition {
	s.mu.Lock()
	defer s.mu.Unlock()
	var tps []kafka.TopicPartition
	for _, p := range s.parts {
		if off, ok := s.stored[p.Topic]; ok {
			topic := p.Topic
			tp := kafka.TopicPartition{Topic: &topic, Partition: p.Partition, Offset: kafka.Offset(off)}
			if md, ok := s.storedMeta[p.Topic]; ok {
				tp.Metadata = &md
			}
			tps = append(tps, tp)
		}
	}
	return tps
}

// storedOrPosition returns, per topic of the slot, the last stored offset, or the
// consumer's fetch position when nothing was stored yet in this ownership.
func (s *Slot) storedOrPosition(c *kafka.Consumer) []kafka.TopicPartition {
	tps := s.tps()
	var missing []kafka.TopicPartition
	s.mu.Lock()
	for i := range tps {
		if off, ok := s.stored[*tps[i].Topic]; ok {
			tps[i].Offset = kafka.Offset(off)
		} else {
			tps[i].Offset = kafka.OffsetInvalid
			missing = append(missing, tps[i])
		}
	}
	s.mu.Unlock()
	if len(missing) > 0 {
		if pos, err := c.Position(missing); err == nil {
			for _, p := range pos {
				for i := range tps {
					if *tps[i].Topic == *p.Topic && tps[i].Partition == p.Partition {
						tps[i].Offset = p.Offset
					}
				}
			}
		}
	}
	return tps
}

func (s *Slot) tps() []kafka.TopicPartition {
	s.mu.Lock()
	defer s.mu.Unlock()
	tps := make([]kafka.TopicPartition, len(s.parts))
	for i := range s.parts {
		tps[i] = kafka.TopicPartition{Topic: &s.parts[i].Topic, Partition: s.parts[i].Partition}
	}
	return tps
}

func (s *Slot) addTopics(parts []record.TopicPartition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parts = append(s.parts, parts...)
}

// run runs the worker; a panic is turned into an error so one slot cannot crash the
// process.
func (s *Slot) run(worker WorkerFunc) {
	defer close(s.done)
	defer s.end()
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("group: worker of slot %d panicked: %v\n%s", s.ID, r, debug.Stack())
			}
		}()
		return worker(s)
	}()
	if err != nil && !s.closed.Load() {
		s.e.fail(err)
		s.e.log.Error("group: worker failed", "group", s.e.cfg.GroupID, "slot", s.ID, "err", err)
	}
}

// syncPause tells librdkafka to pause or resume s's partitions as the slot last asked
// (Slot.paused). The poll goroutine calls it when a slot stayed at its share for
// holdBack, the worker when a release drains it or the worker ends (librdkafka's Pause
// and Resume are thread-safe); both read the wanted state under e.mu, so whichever runs
// last applies the latest wish and a pause can never land after the resume that should
// have followed it. Never after the slot's ownership
// ended or while the consumer closes.
func (e *Engine) syncPause(s *Slot) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closing || s.closed.Load() || e.c == nil {
		return
	}
	s.mu.Lock()
	want := s.paused
	s.mu.Unlock()
	if want == s.pausedInClient {
		return
	}
	var err error
	if want {
		err = e.c.Pause(s.tps())
	} else {
		err = e.c.Resume(s.tps())
	}
	if err != nil {
		e.log.Warn("group: pause/resume", "slot", s.ID, "pause", want, "err", err)
		return
	}
	s.pausedInClient = want
}

// Position returns, per topic of the slot, the consumer's fetch position: the offset
// after the last record handed to the slot (past transaction markers and compacted-away
// offsets), or no entry while librdkafka does not know it yet. Safe from any goroutine.
func (s *Slot) Position() map[string]int64 {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int64{}
	if e.c == nil || e.closing || s.closed.Load() {
		return out
	}
	pos, err := e.c.Position(s.tps())
	if err != nil {
		return out
	}
	for _, p := range pos {
		if p.Offset >= 0 {
			out[*p.Topic] = int64(p.Offset)
		}
	}
	return out
}
