// Package group is the one consumer-group engine that processor and distributed stand on.
// It turns librdkafka's rebalance callback into a per-slot lifecycle: a slot is partition
// number p of every subscribed topic (one topic for most users; several co-partitioned
// topics for partition-wise joins), owned by one worker for one assignment.
//
// # Goroutines and locks
//
//   - The poll goroutine (the caller of Run) owns the *kafka.Consumer. It alone calls Poll,
//     Assign/Unassign, IncrementalAssign/IncrementalUnassign, Pause, CommitOffsets and
//     Close (a worker's Release may Resume its slot, under Engine.mu). The rebalance callback runs on it, inside Poll or Close. It never runs user
//     code and blocks only inside the rebalance callback, where it waits (bounded by
//     Config.RevokeTimeout) for revoked workers to return, and in holdBack, where it waits
//     (at most 100 ms) for workers to free the buffer budget.
//   - One worker goroutine per owned slot runs the WorkerFunc. It is started on assign and
//     waited for on revoke, on failure of another worker and on shutdown.
//   - One goroutine forwards librdkafka's log channel to the slog.Logger; it ends when the
//     consumer is closed.
//   - Engine.mu guards the slot table and every slot's ownership state. Slot.Store takes it,
//     so an offset is never stored after the slot's ownership ended: revoke marks the slot
//     closed under the same lock once its worker returned (or at once, when lost).
//   - A slot's record chunks have their own mutex: the poll goroutine appends, the worker
//     takes. The poll goroutine reads the slot table without Engine.mu (it is the only
//     writer; it writes under Engine.mu for the other readers). The slots count
//     what they hold (records queued plus what the worker holds until its outputs are
//     acknowledged), and the engine adds the counts up. When they hold
//     Config.BufferBytes together, a push to a slot at its share holds the poll goroutine
//     back: it waits (at most holdBack) for a worker's Release before it polls again, and
//     pauses that slot when the wait runs out. Only the poll goroutine pauses, between
//     polls; the worker's Release resumes a paused slot once it is below half of its
//     share. Both apply the slot's wanted state to librdkafka under Engine.mu
//     (syncPause), so never for a slot whose ownership ended or while the consumer
//     closes, and never in the wrong order.
//   - Lock order: Engine.mu before Slot.mu. Nothing holds Slot.mu while taking Engine.mu.
package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/record"
)

// Protocol selects the group protocol and assignment strategy.
type Protocol int

const (
	// Cooperative is the classic protocol with the cooperative-sticky assignor: rebalances
	// move only the partitions that change owner; the others keep running.
	Cooperative Protocol = iota
	// Eager is the classic protocol with the range assignor: every rebalance revokes every
	// partition. Range gives partition p of co-partitioned topics to one member.
	Eager
	// Consumer is the KIP-848 protocol (group.protocol=consumer, brokers 4.0+): the broker
	// assigns, incrementally. Session timeout and heartbeat are broker-side settings.
	Consumer
)

func (p Protocol) String() string {
	switch p {
	case Cooperative:
		return "cooperative"
	case Eager:
		return "eager"
	case Consumer:
		return "consumer"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// Config configures an Engine. The caller (processor, distributed) applies its defaults
// and validation; the engine checks only what it must.
type Config struct {
	Brokers        string
	GroupID        string
	Topics         []string
	Protocol       Protocol
	RemoteAssignor string // Consumer protocol only: "uniform" or "range"; empty for the broker's default
	InstanceID     string // static membership (group.instance.id); empty for dynamic

	SessionTimeout    time.Duration // classic protocols only
	HeartbeatInterval time.Duration // classic protocols only
	MaxPollInterval   time.Duration
	CommitInterval    time.Duration // how often stored offsets are committed asynchronously
	// TakeRecords is the most records a worker takes from its slot at once (the batch size).
	TakeRecords int
	// BufferBytes is the budget of the bytes the slots hold together (or
	// BufferBytesPerSlot per owned slot, when that is more): records fetched and not yet
	// released by their workers (see Slot). Each slot gets an equal share (at least
	// minShare). Once the slots hold the budget, a push to a slot at its share holds the
	// poll goroutine back; a slot that stays there for holdBack is paused until it is
	// below half of its share.
	BufferBytes int64
	// BufferBytesPerSlot raises BufferBytes to this much per owned slot (0: never): with
	// many partitions a small budget would leave each a few hundred records and batches
	// far below TakeRecords.
	BufferBytesPerSlot int64
	RevokeTimeout      time.Duration // how long revoke waits for a worker to return
	ReadCommitted      bool          // isolation.level=read_committed (else read_uncommitted)
	StartFromLatest    bool          // auto.offset.reset=latest for partitions without a commit
	// PauseFetch pauses every assigned partition at once: the group is used for ownership
	// only, and no records are fetched (distributed's technical topic).
	PauseFetch bool
	// TxnOffsets: offsets are committed through a producer's transaction
	// (SendOffsetsToTransaction), never by the consumer: auto-commit off, Store refused.
	TxnOffsets bool
	// HoldStuck keeps the rebalance callback waiting for a stuck worker after
	// RevokeTimeout (Hooks.Stuck tells the owner, who should exit the process) instead of
	// letting the rebalance complete, which would let another member start the slot while
	// the stuck worker still runs. librdkafka gives up after MaxPollInterval.
	HoldStuck bool
	// StatsInterval is statistics.interval.ms: how often Hooks.Stats gets librdkafka's
	// statistics. 0: none.
	StatsInterval time.Duration

	Defaults  kconf.Map // tuning defaults, below Overrides
	Overrides kconf.Map // the user's librdkafka properties (already checked against OwnedKeys)
	Logger    *slog.Logger
	Hooks     Hooks
}

// Hooks are optional observers, called on the poll goroutine; they must not block.
type Hooks struct {
	Assigned func(slots []int32)
	Revoked  func(slots []int32, lost bool)
	// Stuck is called when workers did not return within RevokeTimeout, with the error
	// Run will return.
	Stuck func(slots []int32, err error)
	// Stats receives librdkafka's statistics JSON every Config.StatsInterval.
	Stats func(json string)
	// BeforeUnassign is called in the revoke path once the revoked slots' workers have
	// returned, before the partitions are given up: the last moment to commit for them
	// (exactly-once mode commits its transaction here; with lost, it must abort). It
	// returns slots to rewind (Engine.Rewind) once the rebalance is done.
	BeforeUnassign func(slots []int32, lost bool) (rewind []Epoch, err error)
}

// OwnedKeys returns the consumer properties the engine sets itself (users may not override
// them), each with why.
func OwnedKeys() kconf.Owned {
	return kconf.Owned{
		"bootstrap.servers":               "set the brokers in the config",
		"group.id":                        "set the group in the config",
		"group.instance.id":               "set InstanceID in the config",
		"group.protocol":                  "set Protocol in the config",
		"partition.assignment.strategy":   "set Protocol in the config",
		"group.remote.assignor":           "set Protocol in the config",
		"enable.auto.commit":              "offsets are committed only after outputs are acknowledged",
		"enable.auto.offset.store":        "offsets are stored only after outputs are acknowledged",
		"auto.commit.interval.ms":         "set CommitInterval in the config",
		"session.timeout.ms":              "set SessionTimeout in the config",
		"heartbeat.interval.ms":           "set HeartbeatInterval in the config",
		"max.poll.interval.ms":            "set MaxPollInterval in the config",
		"go.events.channel.enable":        "the engine polls; the events channel is deprecated and can deliver stale records after a rebalance",
		"go.application.rebalance.enable": "the engine handles rebalances",
		"go.logs.channel.enable":          "librdkafka logs are forwarded to the injected slog.Logger",
	}
}

// ErrRevokeTimeout is returned by Run when a worker did not return within RevokeTimeout
// after its slot was revoked. The engine leaves the group rather than let another member
// start the slot while the stuck worker may still act.
var ErrRevokeTimeout = errors.New("group: worker did not stop within the revoke timeout")

// WorkerFunc runs one slot for one ownership, on its own goroutine. It must return soon
// after s.Context() is done, having stored the offsets of the work it finished. A non-nil
// error stops the engine: Run stops every other worker, commits, leaves, and returns it.
type WorkerFunc func(s *Slot) error

// Engine is one group member. Create it with New and call Run once.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	worker WorkerFunc

	mu      sync.Mutex
	slots   map[int32]*Slot
	epoch   uint64
	failure error // first worker error or revoke timeout; stops Run

	running  atomic.Bool
	share    atomic.Int64  // each slot's share of the budget; see setShare
	budget   atomic.Int64  // what the slots may hold together; see setShare
	buffered atomic.Int64  // what every slot counts together (Slot.bytes)
	drained  chan struct{} // a Release or a slot's end: the poll goroutine may go on
	chunks   record.Pool   // arrays of the slots' chunks, given back by Slot.Recycle
	c        *kafka.Consumer
	closing  bool // under mu: the consumer is being closed; Lag must not touch it
	stopping bool // under mu: Run is ending; assignments start no workers
	rewinds  chan rewindReq
}

type rewindReq struct {
	slots []Epoch
	done  chan error
}

// Epoch names one ownership of a slot: a rewind applies only to the ownership whose work
// was aborted, not to a later one of the same partition.
type Epoch struct {
	Slot  int32
	Epoch uint64
}

// PartitionLag is one owned partition's lag: records after the last stored offset.
type PartitionLag struct {
	Topic     string
	Partition int32
	Lag       int64
}

// Lag reports the lag of every owned partition from librdkafka's cached high watermarks
// (no broker round trip): high watermark minus the next offset to process (the last
// stored offset, else the fetch position). It is safe to call from any goroutine.
func (e *Engine) Lag() []PartitionLag {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.c == nil || e.closing {
		return nil
	}
	var out []PartitionLag
	for _, s := range e.slots {
		for _, tp := range s.storedOrPosition(e.c) {
			_, high, err := e.c.GetWatermarkOffsets(*tp.Topic, tp.Partition)
			if err != nil || high < 0 || tp.Offset < 0 {
				continue
			}
			out = append(out, PartitionLag{Topic: *tp.Topic, Partition: tp.Partition, Lag: max(high-int64(tp.Offset), 0)})
		}
	}
	return out
}

// New validates cfg and returns an engine that will run worker for every owned slot.
func New(cfg Config, worker WorkerFunc) (*Engine, error) {
	if cfg.Brokers == "" || cfg.GroupID == "" || len(cfg.Topics) == 0 {
		return nil, errors.New("group: Brokers, GroupID and Topics are required")
	}
	if len(cfg.Topics) > 1 && cfg.Protocol == Cooperative {
		return nil, fmt.Errorf("group: %d co-partitioned topics need an assignor that gives partition p of every topic to one member: use the Eager (range) or Consumer protocol, not Cooperative", len(cfg.Topics))
	}
	if cfg.RevokeTimeout <= 0 || cfg.CommitInterval <= 0 {
		return nil, errors.New("group: RevokeTimeout and CommitInterval must be positive")
	}
	if cfg.TakeRecords <= 0 {
		cfg.TakeRecords = 1000
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = DefaultBufferBytes
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg:     cfg,
		log:     log,
		worker:  worker,
		slots:   make(map[int32]*Slot),
		rewinds: make(chan rewindReq, 16),
		drained: make(chan struct{}, 1),
	}
	e.setShare()
	return e, nil
}

// DefaultBufferBytes is Config.BufferBytes when it is zero.
const DefaultBufferBytes = 4 << 20

// minShare is the least share a slot gets, however many slots share the budget (unless
// the budget itself is smaller): below it a partition's batches would be cut to a few
// records and the poll held back for every batch.
const minShare = 256 << 10

// RecordSize is what a record counts against a slot's share: its key, value and headers
// plus recordOverhead.
func RecordSize(m *record.Message) int64 {
	n := int64(len(m.Key)+len(m.Value)) + recordOverhead
	for _, h := range m.Headers {
		n += int64(len(h.Key)+len(h.Value)) + 40
	}
	return n
}

// recordOverhead approximates what a queued record costs besides its key, value and
// headers (the record struct, slice headers, the topic string it shares).
const recordOverhead = 128

// setShare recomputes each slot's share of BufferBytes after the slot table changed.
// Called with e.mu held or before Run.
func (e *Engine) setShare() {
	n := int64(max(len(e.slots), 1))
	budget := max(e.cfg.BufferBytes, n*e.cfg.BufferBytesPerSlot)
	e.budget.Store(budget)
	e.share.Store(max(budget/n, min(minShare, budget)))
}

func (e *Engine) slotShare() int64 { return e.share.Load() }

func (e *Engine) consumerConfig() *kafka.ConfigMap {
	owned := kconf.Map{
		"bootstrap.servers":        e.cfg.Brokers,
		"group.id":                 e.cfg.GroupID,
		"enable.auto.commit":       true,
		"enable.auto.offset.store": false,
		"auto.commit.interval.ms":  int(e.cfg.CommitInterval.Milliseconds()),
		"max.poll.interval.ms":     int(e.cfg.MaxPollInterval.Milliseconds()),
		"go.logs.channel.enable":   true,
	}
	switch e.cfg.Protocol {
	case Consumer:
		owned["group.protocol"] = "consumer"
		if e.cfg.RemoteAssignor != "" {
			owned["group.remote.assignor"] = e.cfg.RemoteAssignor
		}
	default:
		owned["group.protocol"] = "classic"
		owned["session.timeout.ms"] = int(e.cfg.SessionTimeout.Milliseconds())
		owned["heartbeat.interval.ms"] = int(e.cfg.HeartbeatInterval.Milliseconds())
		if e.cfg.Protocol == Eager {
			owned["partition.assignment.strategy"] = "range"
		} else {
			owned["partition.assignment.strategy"] = "cooperative-sticky"
		}
	}
	if e.cfg.InstanceID != "" {
		owned["group.instance.id"] = e.cfg.InstanceID
	}
	if e.cfg.StatsInterval > 0 {
		owned["statistics.interval.ms"] = int(e.cfg.StatsInterval.Milliseconds())
	}
	if e.cfg.TxnOffsets {
		owned["enable.auto.commit"] = false
		delete(owned, "auto.commit.interval.ms")
	}
	defaults := kconf.Map{
		"auto.offset.reset": "earliest",
		"isolation.level":   "read_uncommitted",
		"log_level":         6,
		"client.id":         kconf.ClientID(e.cfg.GroupID),
	}
	if e.cfg.StartFromLatest {
		defaults["auto.offset.reset"] = "latest"
	}
	if e.cfg.ReadCommitted {
		owned["isolation.level"] = "read_committed"
	}
	for k, v := range e.cfg.Defaults {
		defaults[k] = v
	}
	return kconf.Build(defaults, e.cfg.Overrides, owned)
}

// Run joins the group and polls until ctx is done or a worker fails. On the way out it
// stops every worker (each finishes what it has in flight, bounded by RevokeTimeout),
// commits the stored offsets and leaves the group. It returns nil after a clean stop.
func (e *Engine) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("group: Run called twice")
	}
	c, err := kafka.NewConsumer(e.consumerConfig())
	if err != nil {
		return fmt.Errorf("group: create consumer: %w", err)
	}
	e.mu.Lock()
	e.c = c
	e.mu.Unlock()
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		kconf.ForwardLogs(e.log, c.Logs())
	}()
	if err := c.SubscribeTopics(e.cfg.Topics, e.rebalance); err != nil {
		c.Close()
		<-logsDone
		return fmt.Errorf("group: subscribe to %v: %w", e.cfg.Topics, err)
	}
	e.log.Info("group: joined", "group", e.cfg.GroupID, "topics", e.cfg.Topics, "protocol", e.cfg.Protocol.String())

	for ctx.Err() == nil && e.failed() == nil {
		select {
		case r := <-e.rewinds:
			r.done <- e.rewind(r.slots)
			continue
		default:
		}
		switch ev := c.Poll(100).(type) {
		case *kafka.Message:
			e.dispatch(ctx, ev)
		case kafka.Error:
			e.onError(ev)
		case kafka.OffsetsCommitted:
			if ev.Error != nil {
				e.log.Warn("group: offset commit failed", "group", e.cfg.GroupID, "err", ev.Error)
			}
		case *kafka.Stats:
			if e.cfg.Hooks.Stats != nil {
				e.cfg.Hooks.Stats(ev.String())
			}
		}
	}

	// Stop every worker and wait for them while still polling, so the member stays in the
	// group (heartbeats, max.poll.interval) and keeps its partitions until its workers are
	// done; only then Close, which commits in the final revoke and leaves the group. A
	// worker stuck past RevokeTimeout is reported (Hooks.Stuck); with HoldStuck the member
	// keeps holding its partitions for as long as the worker runs, so no other member
	// starts the slot before this process ends.
	e.mu.Lock()
	e.stopping = true
	var running []*Slot
	for _, s := range e.slots {
		s.cancel()
		running = append(running, s)
	}
	e.mu.Unlock()
	e.awaitStopped(c, running)
	e.mu.Lock()
	e.closing = true
	e.mu.Unlock()
	closeErr := c.Close()
	<-logsDone
	// A worker can outlive Close only if it was stuck past RevokeTimeout; wait no more.
	e.mu.Lock()
	failure := e.failure
	e.mu.Unlock()
	if failure != nil {
		return failure
	}
	if closeErr != nil {
		return fmt.Errorf("group: close consumer: %w", closeErr)
	}
	return nil
}

func (e *Engine) failed() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failure
}

func (e *Engine) fail(err error) {
	e.mu.Lock()
	if e.failure == nil {
		e.failure = err
	}
	e.mu.Unlock()
}

func (e *Engine) onError(err kafka.Error) {
	if err.IsFatal() {
		e.fail(fmt.Errorf("group: fatal consumer error: %w", err))
		return
	}
	switch err.Code() {
	case kafka.ErrGroupAuthorizationFailed:
		// Retrying cannot help, and librdkafka would retry for good: no member, no commit.
		e.fail(fmt.Errorf("group: not authorized to use consumer group %q (its principal needs READ on the group): %w", e.cfg.GroupID, err))
	case kafka.ErrTopicAuthorizationFailed:
		e.fail(fmt.Errorf("group: not authorized to read topics %q (its principal needs READ and DESCRIBE on them): %w", e.cfg.Topics, err))
	case kafka.ErrAllBrokersDown, kafka.ErrTransport:
		e.log.Warn("group: broker connection", "group", e.cfg.GroupID, "err", err)
	case kafka.ErrMaxPollExceeded:
		e.log.Error("group: max.poll.interval.ms exceeded; the member left the group and rejoins", "group", e.cfg.GroupID)
	default:
		e.log.Warn("group: consumer error", "group", e.cfg.GroupID, "err", err)
	}
}

// awaitStopped polls (serving rebalances, dropping records) until every slot's worker
// returned, RevokeTimeout passes (reported as stuck), or, with HoldStuck, for as long as a
// stuck worker runs.
func (e *Engine) awaitStopped(c *kafka.Consumer, slots []*Slot) {
	deadline := time.Now().Add(e.cfg.RevokeTimeout)
	reported := false
	for {
		var stuck []int32
		for _, s := range slots {
			select {
			case <-s.done:
			default:
				stuck = append(stuck, s.ID)
			}
		}
		if len(stuck) == 0 {
			return
		}
		if !reported && time.Now().After(deadline) {
			reported = true
			slices.Sort(stuck)
			for _, s := range slots {
				select {
				case <-s.done:
				default:
					s.stuck.Store(true)
				}
			}
			err := fmt.Errorf("%w (%s, group %q, slots %v, on shutdown)", ErrRevokeTimeout, e.cfg.RevokeTimeout, e.cfg.GroupID, stuck)
			e.fail(err)
			e.log.Error("group: workers stuck on shutdown", "group", e.cfg.GroupID, "slots", stuck, "hold", e.cfg.HoldStuck)
			if e.cfg.Hooks.Stuck != nil {
				e.cfg.Hooks.Stuck(stuck, err)
			}
			if !e.cfg.HoldStuck {
				return
			}
		}
		switch ev := c.Poll(50).(type) {
		case kafka.Error:
			e.onError(ev)
		case *kafka.Message:
			// Dropped: the slots are stopping; the next owner reads it again.
		}
	}
}

// dispatch hands one message to its slot, holding back (and at last pausing the slot)
// when the slot is at its share.
// It runs on the poll goroutine, the only writer of e.slots, so it reads the table
// without e.mu: the per-record path takes no engine lock.
func (e *Engine) dispatch(ctx context.Context, m *kafka.Message) {
	if m.TopicPartition.Error != nil {
		e.log.Warn("group: fetch error", "topic", *m.TopicPartition.Topic, "partition", m.TopicPartition.Partition, "err", m.TopicPartition.Error)
		return
	}
	s := e.slots[m.TopicPartition.Partition]
	if s == nil || s.closed.Load() {
		return // revoked: the next owner reads it from the committed offset
	}
	if !s.advance(*m.TopicPartition.Topic, int64(m.TopicPartition.Offset)) {
		return // handed to this slot already
	}
	msg := record.Message{
		Topic:     *m.TopicPartition.Topic,
		Partition: m.TopicPartition.Partition,
		Offset:    int64(m.TopicPartition.Offset),
		Key:       m.Key,
		Value:     m.Value,
		Timestamp: m.Timestamp,
	}
	if len(m.Headers) > 0 {
		// The client allocates a message's headers for it alone and never touches them
		// again: share the slice instead of converting a copy.
		msg.Headers = unsafe.Slice((*record.Header)(unsafe.Pointer(unsafe.SliceData(m.Headers))), len(m.Headers))
	}
	if s.push(&msg, RecordSize(&msg), e.cfg.TakeRecords, e.slotShare(), e.budget.Load()) {
		e.holdBack(ctx, s)
	}
}

// kafka.Header and record.Header must stay the same struct (this conversion compiles
// only while they are) for dispatch to share a message's headers.
var _ = record.Header(kafka.Header{})

// rebalance is the librdkafka rebalance callback; it runs on the poll goroutine.
func (e *Engine) rebalance(c *kafka.Consumer, ev kafka.Event) error {
	incremental := c.GetRebalanceProtocol() == "COOPERATIVE"
	switch ev := ev.(type) {
	case kafka.AssignedPartitions:
		if len(ev.Partitions) == 0 {
			// A rebalance that added no partition to this member. Under the cooperative
			// protocol librdkafka calls every member at the end of every rebalance, with an
			// empty list when nothing is added, so a rebalance that moved nothing of this
			// member's shows only here.
			e.log.Info("group: rebalanced, no partition added", "group", e.cfg.GroupID)
		}
		e.assign(ev.Partitions)
		var err error
		if incremental {
			err = c.IncrementalAssign(ev.Partitions)
		} else {
			err = c.Assign(ev.Partitions)
		}
		switch {
		case err != nil:
			e.fail(fmt.Errorf("group: assign %v: %w", ev.Partitions, err))
		case len(ev.Partitions) == 0:
		case e.cfg.PauseFetch:
			if err := c.Pause(ev.Partitions); err != nil {
				e.log.Warn("group: pause", "err", err)
			}
		default:
			// A partition paused for backpressure stays paused in librdkafka across a
			// revoke and a later assign; the new slot starts unpaused, so resume it.
			if err := c.Resume(ev.Partitions); err != nil {
				e.log.Warn("group: resume on assign", "err", err)
			}
		}
	case kafka.RevokedPartitions:
		lost := c.AssignmentLost()
		e.revoke(c, ev.Partitions, lost)
		var err error
		if incremental {
			err = c.IncrementalUnassign(ev.Partitions)
		} else {
			err = c.Unassign()
		}
		if err != nil && !c.IsClosed() {
			e.log.Warn("group: unassign", "err", err)
		}
	}
	return nil
}

func (e *Engine) assign(tps []kafka.TopicPartition) {
	e.mu.Lock()
	stopping := e.stopping
	e.mu.Unlock()
	if stopping {
		return // Run is ending: hold the partitions without working; Close gives them up
	}
	byID := make(map[int32][]record.TopicPartition)
	for _, tp := range tps {
		byID[tp.Partition] = append(byID[tp.Partition], record.TopicPartition{Topic: *tp.Topic, Partition: tp.Partition})
	}
	var started []int32
	for id, parts := range byID {
		e.mu.Lock()
		if old := e.slots[id]; old != nil {
			// Incremental assign of a co-partitioned sibling topic: grow the slot. With the
			// range assignor all topics of p arrive together, so this is rare.
			old.addTopics(parts)
			e.mu.Unlock()
			continue
		}
		e.epoch++
		s := newSlot(e, id, e.epoch, parts)
		e.slots[id] = s
		e.setShare()
		e.mu.Unlock()
		started = append(started, id)
		go s.run(e.worker)
	}
	slices.Sort(started)
	if len(started) > 0 {
		e.log.Info("group: assigned", "group", e.cfg.GroupID, "slots", started)
		if e.cfg.Hooks.Assigned != nil {
			e.cfg.Hooks.Assigned(started)
		}
	}
}

// revoke stops the workers of every slot touched by tps and waits for them (bounded),
// then commits what they stored unless the assignment was lost.
func (e *Engine) revoke(c *kafka.Consumer, tps []kafka.TopicPartition, lost bool) {
	e.mu.Lock()
	var slots []*Slot
	for _, tp := range tps {
		if s := e.slots[tp.Partition]; s != nil && !slices.Contains(slots, s) {
			slots = append(slots, s)
			delete(e.slots, tp.Partition)
		}
	}
	e.setShare()
	if lost {
		// Another member may own these already: nothing they do from now on counts.
		for _, s := range slots {
			s.closed.Store(true)
		}
	}
	e.mu.Unlock()
	if len(slots) == 0 {
		return
	}
	for _, s := range slots {
		s.cancel()
	}
	deadline := time.NewTimer(e.cfg.RevokeTimeout)
	defer deadline.Stop()
	var stuck []string
	reported := true // every stuck worker was reported on shutdown already
	for _, s := range slots {
		if s.stuck.Load() {
			// Waited for and reported on shutdown: the bound is paid once.
			stuck = append(stuck, fmt.Sprint(s.ID))
			e.mu.Lock()
			s.closed.Store(true)
			e.mu.Unlock()
			continue
		}
		select {
		case <-s.done:
		case <-deadline.C:
		}
		select {
		case <-s.done:
		default:
			stuck = append(stuck, fmt.Sprint(s.ID))
			reported = false
		}
		e.mu.Lock()
		s.closed.Store(true)
		e.mu.Unlock()
	}
	ids := make([]int32, len(slots))
	for i, s := range slots {
		ids[i] = s.ID
	}
	if len(stuck) > 0 && !reported {
		err := fmt.Errorf("%w (%s, group %q, slots %s)", ErrRevokeTimeout, e.cfg.RevokeTimeout, e.cfg.GroupID, strings.Join(stuck, ","))
		e.fail(err)
		e.log.Error("group: workers stuck after revoke", "group", e.cfg.GroupID, "slots", stuck, "hold", e.cfg.HoldStuck)
		if e.cfg.Hooks.Stuck != nil {
			e.cfg.Hooks.Stuck(ids, err)
		}
		if e.cfg.HoldStuck {
			for _, s := range slots {
				<-s.done
			}
		}
	}
	if e.cfg.Hooks.BeforeUnassign != nil {
		again, err := e.cfg.Hooks.BeforeUnassign(ids, lost)
		if err != nil {
			e.fail(err)
		} else if len(again) > 0 {
			select {
			case e.rewinds <- rewindReq{slots: again, done: make(chan error, 1)}:
			default:
				e.fail(fmt.Errorf("group: rewind queue full (group %q)", e.cfg.GroupID))
			}
		}
	}
	if !lost && !e.cfg.TxnOffsets {
		var commit []kafka.TopicPartition
		for _, s := range slots {
			commit = append(commit, s.storedOffsets()...)
		}
		if len(commit) > 0 {
			if _, err := c.CommitOffsets(commit); err != nil {
				e.log.Warn("group: commit on revoke", "group", e.cfg.GroupID, "slots", ids, "err", err)
			}
		}
	}
	e.log.Info("group: revoked", "group", e.cfg.GroupID, "slots", ids, "lost", lost)
	if e.cfg.Hooks.Revoked != nil {
		e.cfg.Hooks.Revoked(ids, lost)
	}
}

// Rewind restarts the given slots from their committed offsets: their workers are
// stopped and waited for, anything they had fetched is dropped, the consumer seeks back,
// and new workers start with a new epoch. Exactly-once mode uses it after an aborted
// transaction. It blocks until the poll goroutine served it (or ctx ends).
func (e *Engine) Rewind(ctx context.Context, slots []Epoch) error {
	r := rewindReq{slots: slots, done: make(chan error, 1)}
	select {
	case e.rewinds <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rewind runs on the poll goroutine.
func (e *Engine) rewind(ids []Epoch) error {
	e.mu.Lock()
	var old []*Slot
	for _, id := range ids {
		// Only the ownership whose work was aborted: a slot revoked and assigned again
		// since then starts from the committed offsets anyway.
		if s := e.slots[id.Slot]; s != nil && s.Epoch == id.Epoch {
			old = append(old, s)
			s.closed.Store(true) // nothing it does from now on counts
		}
	}
	e.mu.Unlock()
	for _, s := range old {
		s.cancel()
	}
	deadline := time.NewTimer(e.cfg.RevokeTimeout)
	defer deadline.Stop()
	for _, s := range old {
		select {
		case <-s.done:
		case <-deadline.C:
			err := fmt.Errorf("%w (rewind, group %q, slot %d)", ErrRevokeTimeout, e.cfg.GroupID, s.ID)
			e.fail(err)
			return err
		}
	}
	var tps []kafka.TopicPartition
	for _, s := range old {
		tps = append(tps, s.tps()...)
	}
	if len(tps) == 0 {
		return nil
	}
	committed, err := e.c.Committed(tps, int(e.cfg.RevokeTimeout.Milliseconds()))
	if err != nil {
		err = fmt.Errorf("group: rewind: committed offsets: %w", err)
		e.fail(err)
		return err
	}
	for _, tp := range committed {
		if tp.Offset < 0 {
			tp.Offset = kafka.OffsetBeginning
			if e.cfg.StartFromLatest {
				tp.Offset = kafka.OffsetEnd
			}
		}
		if err := e.c.Seek(tp, 0); err != nil {
			err = fmt.Errorf("group: rewind: seek %s[%d] to %v: %w", *tp.Topic, tp.Partition, tp.Offset, err)
			e.fail(err)
			return err
		}
	}
	if err := e.c.Resume(tps); err != nil { // the old slot may have been paused
		e.log.Warn("group: rewind: resume", "err", err)
	}
	for _, s := range old {
		e.mu.Lock()
		if e.slots[s.ID] != s { // revoked meanwhile: nothing to restart
			e.mu.Unlock()
			continue
		}
		e.epoch++
		ns := newSlot(e, s.ID, e.epoch, s.Partitions())
		e.slots[s.ID] = ns
		e.mu.Unlock()
		go ns.run(e.worker)
	}
	e.log.Info("group: rewound", "group", e.cfg.GroupID, "slots", ids)
	return nil
}

// GroupMetadata returns the consumer's current group metadata, for
// SendOffsetsToTransaction. Call it from the rebalance path or a worker.
func (e *Engine) GroupMetadata() (*kafka.ConsumerGroupMetadata, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.c == nil || e.c.IsClosed() {
		return nil, errors.New("group: consumer closed")
	}
	return e.c.GetConsumerGroupMetadata()
}

// Owned reports whether this ownership of the slot is still current (its offsets may be
// committed): not revoked, lost or rewound since.
func (s *Slot) Owned() bool {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	return !s.closed.Load() && e.slots[s.ID] == s
}

// store records offsets for s unless its ownership has ended.
func (e *Engine) store(s *Slot, offsets []record.Offset) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg.TxnOffsets {
		return errors.New("group: offsets are committed through the transaction in this mode")
	}
	if s.closed.Load() || e.closing {
		return ErrNotOwned
	}
	tps := make([]kafka.TopicPartition, len(offsets))
	for i := range offsets {
		tps[i] = kafka.TopicPartition{Topic: &offsets[i].Topic, Partition: offsets[i].Partition, Offset: kafka.Offset(offsets[i].Offset)}
		if offsets[i].Metadata != "" {
			tps[i].Metadata = &offsets[i].Metadata
		}
	}
	if _, err := e.c.StoreOffsets(tps); err != nil {
		var kerr kafka.Error
		if errors.As(err, &kerr) && kerr.Code() == kafka.ErrState {
			return ErrNotOwned // librdkafka no longer has the partition assigned
		}
		return fmt.Errorf("group: store offsets: %w", err)
	}
	s.mu.Lock()
	for _, o := range offsets {
		s.stored[o.Topic] = o.Offset
		if o.Metadata != "" {
			s.storedMeta[o.Topic] = o.Metadata
		} else {
			delete(s.storedMeta, o.Topic)
		}
	}
	s.mu.Unlock()
	return nil
}

// Committed returns the group's committed offset and its metadata for each partition of
// the slot that has one, asking the group coordinator (bounded by ctx).
func (s *Slot) Committed(ctx context.Context) ([]record.Offset, error) {
	e := s.e
	e.mu.Lock()
	c := e.c
	e.mu.Unlock()
	if c == nil {
		return nil, errors.New("group: not running")
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	tps, err := c.Committed(s.tps(), int(timeout.Milliseconds()))
	if err != nil {
		return nil, fmt.Errorf("group: committed offsets: %w", err)
	}
	var out []record.Offset
	for _, tp := range tps {
		if tp.Offset < 0 || tp.Topic == nil {
			continue // nothing committed
		}
		o := record.Offset{TopicPartition: record.TopicPartition{Topic: *tp.Topic, Partition: tp.Partition}, Offset: int64(tp.Offset)}
		if tp.Metadata != nil {
			o.Metadata = *tp.Metadata
		}
		out = append(out, o)
	}
	return out, nil
}

// ErrNotOwned is returned by Slot.Store after the slot's ownership ended: the offsets
// belong to the next owner now and are dropped.
var ErrNotOwned = errors.New("group: slot no longer owned")
