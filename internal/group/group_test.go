package group

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func produce(t *testing.T, brokers, topic string, partitions, n int) {
	t.Helper()
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3, "linger.ms": 20})
	require.NoError(t, err)
	defer p.Close()
	dr := make(chan kafka.Event, n)
	for i := range n {
		require.NoError(t, p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(i % partitions)}, Value: []byte("v")}, dr))
	}
	for range n {
		require.NoError(t, (<-dr).(*kafka.Message).TopicPartition.Error)
	}
}

func config(brokers string, topics ...string) Config {
	return Config{Brokers: brokers, GroupID: "g", Topics: topics, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second,
		MaxPollInterval: time.Minute, CommitInterval: 100 * time.Millisecond, TakeRecords: 100, RevokeTimeout: 5 * time.Second,
		Defaults: kconf.Map{"fetch.wait.max.ms": 10}}
}

// TestBackpressurePausesAndResumes: a slow worker makes its slot's queue fill; the slot is
// paused (the queue stays near the limit instead of holding the whole partition) and
// resumed as the worker drains, and every record arrives once, in order.
func TestBackpressurePausesAndResumes(t *testing.T) {
	b, err := embedded.Start(embedded.Topic{Name: "t", Partitions: 1})
	require.NoError(t, err)
	defer b.Close()
	const n, limit = 3000, 500
	produce(t, b.Bootstrap(), "t", 1, n)

	var mu sync.Mutex
	var offsets []int64
	maxQueued := 0
	ctx, cancel := context.WithCancel(context.Background())
	cfg := config(b.Bootstrap(), "t")
	cfg.BufferBytes = limit * (1 + recordOverhead) // records of a 1-byte value
	e, err := New(cfg, func(s *Slot) error {
		for {
			select {
			case <-s.Context().Done():
				return nil
			case <-s.Ready():
			}
			time.Sleep(20 * time.Millisecond) // slow: let the queue fill between takes
			queued := int(s.Buffered() / (1 + recordOverhead))
			var msgs []record.Message
			for m, n := s.Take(); m != nil; m, n = s.Take() {
				msgs = append(msgs, m...)
				s.Release(n) // done with them: nothing is produced here
			}
			mu.Lock()
			maxQueued = max(maxQueued, queued)
			for _, m := range msgs {
				offsets = append(offsets, m.Offset)
			}
			done := len(offsets) == n
			mu.Unlock()
			if len(msgs) > 0 {
				last := msgs[len(msgs)-1]
				require.NoError(t, s.Store(record.Offset{TopicPartition: record.TopicPartition{Topic: last.Topic, Partition: last.Partition}, Offset: last.Offset + 1}))
			}
			if done {
				cancel()
			}
		}
	})
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- e.Run(ctx) }()
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatalf("not all records within 60s: %d", len(offsets))
	}
	require.Len(t, offsets, n)
	for i, o := range offsets {
		require.EqualValues(t, i, o, "records in order, once")
	}
	// librdkafka purges a paused partition's prefetched records and refetches them on
	// resume, which takes it up to a second: pausing is a last resort, not flow control.
	t.Logf("largest queue seen: %d records (limit %d)", maxQueued, limit)
	assert.Less(t, maxQueued, n/2, "the slot was paused: the queue never held most of the partition")
	// A pause takes effect at once (librdkafka drops what it had prefetched for the
	// partition), so the slot never holds more than its share and the record that filled it.
	assert.LessOrEqual(t, maxQueued, limit+1, "records buffered beyond BufferBytes")
}

func TestNewRejectsCooperativeCoPartitioning(t *testing.T) {
	cfg := config("127.0.0.1:1", "a", "b")
	_, err := New(cfg, func(*Slot) error { return nil })
	require.ErrorContains(t, err, "use the Eager (range) or Consumer protocol")
	cfg.Protocol = Eager
	_, err = New(cfg, func(*Slot) error { return nil })
	require.NoError(t, err)
}

// TestWorkerPanicFailsRun: a panicking worker stops the engine with an error, not a crash.
func TestWorkerPanicFailsRun(t *testing.T) {
	b, err := embedded.Start(embedded.Topic{Name: "t", Partitions: 2})
	require.NoError(t, err)
	defer b.Close()
	e, err := New(config(b.Bootstrap(), "t"), func(s *Slot) error {
		if s.ID == 1 {
			panic("boom")
		}
		<-s.Context().Done()
		return nil
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = e.Run(ctx)
	require.ErrorContains(t, err, "worker of slot 1 panicked: boom")
}

// TestPausedPartitionResumesAfterReassign: a partition paused for backpressure stays
// paused inside librdkafka across revoke and assign; the engine must resume it when it
// is assigned again, or the new slot would never get a record.
func TestPausedPartitionResumesAfterReassign(t *testing.T) {
	b, err := embedded.Start(embedded.Topic{Name: "t", Partitions: 2})
	require.NoError(t, err)
	defer b.Close()
	const n = 2000
	produce(t, b.Bootstrap(), "t", 2, n)

	cfg := config(b.Bootstrap(), "t")
	cfg.Protocol = Eager
	cfg.BufferBytes = 10 * (1 + recordOverhead)
	var mu sync.Mutex
	seen := map[int64]bool{}
	hold := make(chan struct{}) // the first ownership takes nothing: its slots fill and pause
	var held []*Slot            // the first ownership's slots
	a, err := New(cfg, func(s *Slot) error {
		mu.Lock()
		first := len(held) < 2
		if first {
			held = append(held, s)
		}
		mu.Unlock()
		if first {
			select {
			case <-hold:
			case <-s.Context().Done():
				return nil
			}
		}
		for {
			select {
			case <-s.Context().Done():
				return nil
			case <-s.Ready():
			}
			for m := range s.takeAll() {
				mu.Lock()
				if m.Partition == 0 {
					seen[m.Offset] = true
				} else {
					seen[1_000_000+m.Offset] = true
				}
				mu.Unlock()
			}
		}
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	testwait.For(t, 30*time.Second, "a owns both slots, paused in the client by their full queues", func() bool {
		mu.Lock()
		slots := slices.Clone(held)
		mu.Unlock()
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(slots) == 2 && slots[0].pausedInClient && slots[1].pausedInClient
	})

	// Another member joins and leaves: eager revokes both slots and gives them back.
	var otherOwned atomic.Bool
	other, err := New(cfg, func(s *Slot) error { otherOwned.Store(true); <-s.Context().Done(); return nil })
	require.NoError(t, err)
	octx, ocancel := context.WithCancel(context.Background())
	oerr := make(chan error, 1)
	go func() { oerr <- other.Run(octx) }()
	testwait.For(t, 30*time.Second, "the other member owns a slot", otherOwned.Load)
	ocancel()
	require.NoError(t, <-oerr)
	close(hold)

	testwait.ForNoError(t, 30*time.Second, "every record after the slots came back", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != n {
			return fmt.Errorf("%d of %d records", len(seen), n)
		}
		return nil
	})
	cancel()
	require.NoError(t, <-errc)
}

// takeAll takes every chunk the slot holds, record by record.
func (s *Slot) takeAll() func(yield func(record.Message) bool) {
	return func(yield func(record.Message) bool) {
		for msgs, n := s.Take(); msgs != nil; msgs, n = s.Take() {
			s.Release(n)
			for _, m := range msgs {
				if !yield(m) {
					return
				}
			}
		}
	}
}

// TestSlotDropsRecordsHandedOverAgain: within one ownership a record at or below the
// slot's position (librdkafka returning it again after a pause) is dropped; every topic
// of a co-partitioned slot has its own position; gaps (compaction, transaction markers)
// pass.
func TestSlotDropsRecordsHandedOverAgain(t *testing.T) {
	cfg := config("127.0.0.1:1", "a", "b")
	cfg.Protocol = Eager
	e, err := New(cfg, func(*Slot) error { return nil })
	require.NoError(t, err)
	s := newSlot(e, 0, 1, []record.TopicPartition{{Topic: "a"}, {Topic: "b"}})
	for _, step := range []struct {
		topic  string
		offset int64
		want   bool
	}{
		{"a", 5, true}, {"a", 6, true}, {"a", 6, false}, {"a", 5, false},
		{"b", 0, true}, {"a", 9, true}, {"b", 0, false}, {"b", 1, true}, {"a", 8, false}, {"a", 10, true},
	} {
		assert.Equal(t, step.want, s.advance(step.topic, step.offset), "%s@%d", step.topic, step.offset)
	}
	assert.EqualValues(t, 4, s.refetched)
}
