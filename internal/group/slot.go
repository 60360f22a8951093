package group

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/internal/record"
)

// Slot is partition number ID of every subscribed topic, owned by this member for one
// assignment. Its worker reads records with Ready and Take, and stores the offsets of
// finished work with Store.
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

	mu     sync.Mutex
	parts  []record.TopicPartition
	queue  []record.Message
	spare  []record.Message // the worker's previous batch, reused as the next queue
	paused bool
	ready  chan struct{} // cap 1: signalled when the queue goes from empty to non-empty
	stored map[string]int64
}

func newSlot(e *Engine, id int32, epoch uint64, parts []record.TopicPartition) *Slot {
	ctx, cancel := context.WithCancel(context.Background())
	return &Slot{
		ID:     id,
		Epoch:  epoch,
		e:      e,
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		parts:  parts,
		ready:  make(chan struct{}, 1),
		stored: make(map[string]int64),
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

// Ready is signalled when records are queued. After it fires, Take returns them.
func (s *Slot) Ready() <-chan struct{} { return s.ready }

// Take returns every queued record, in offset order per topic. The returned slice is
// owned by the caller until its next Take, which reuses its backing array: copy records
// that must live longer (their Key, Value and Headers are never reused).
func (s *Slot) Take() []record.Message {
	s.mu.Lock()
	out := s.queue
	clear(s.spare) // drop references held by the previous batch
	s.queue = s.spare[:0]
	s.spare = out
	resume := s.paused
	s.paused = false
	s.mu.Unlock()
	if resume {
		s.e.resume(s) // outside s.mu: the engine lock is taken before slot locks
	}
	return out
}

// push appends m and reports whether the slot just went over limit and must be paused.
func (s *Slot) push(m record.Message, limit int) (pause bool) {
	s.mu.Lock()
	s.queue = append(s.queue, m)
	n := len(s.queue)
	if n >= limit && !s.paused {
		s.paused = true
		pause = true
	}
	s.mu.Unlock()
	if n == 1 {
		select {
		case s.ready <- struct{}{}:
		default:
		}
	}
	return pause
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
			tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p.Partition, Offset: kafka.Offset(off)})
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

// resume resumes a slot's partitions from the worker's goroutine (librdkafka's resume is
// thread-safe), so a drained slot fetches again at once rather than after the poll
// loop's next wake-up. Under e.mu: never after the slot's ownership ended or while the
// consumer closes.
func (e *Engine) resume(s *Slot) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closing || s.closed.Load() || e.c == nil {
		return
	}
	if err := e.c.Resume(s.tps()); err != nil {
		e.log.Warn("group: resume", "slot", s.ID, "err", err)
	}
}
