package processor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/record"
)

// ErrReplayUnfinished is wrapped by Run in replay mode when it stopped (its context
// ended, Close) before every owned partition reached its end offset.
var ErrReplayUnfinished = errors.New("processor: replay stopped before its end offsets")

// Replay makes a processor re-run its inputs up to fixed end offsets and then stop (to
// rebuild a table or outputs from the log): give it to WithReplay. Handlers run as usual (their
// state effects included: that is the point of a replay), records at or past a
// partition's end offset are not handled, and Run returns nil once every partition this
// instance owns has been handled up to its end and its offsets are committed.
//
// Run a replay in its own consumer group (a fresh group starts at the earliest offsets;
// see Config.StartFromLatest), so the live processor's group and offsets are untouched,
// and as one instance: with several, each stops once the partitions it owns are done.
// A replay that is stopped early (Run's context ends) commits what it finished and
// returns an error wrapping ErrReplayUnfinished; running it again resumes from there.
//
// `samsa replay plan` writes a plan file: a Replay as JSON (its fields' tags), beside the
// replay's "group" and "namespace"; decode it with encoding/json.
type Replay struct {
	// Until is the end offset of every partition of every input: records below it are
	// handled, none at or after it. Run fails at start, naming them, when an input
	// partition has no end offset here.
	Until []PartitionOffset `json:"until"`
	// SuppressOutputs drops what handlers send (and dead letters) instead of producing it:
	// nothing reaches an output topic, and input offsets are committed as if every output
	// had been acknowledged. With it no producer is created.
	SuppressOutputs bool `json:"suppress_outputs"`
}

// PartitionOffset is an offset of one topic partition.
type PartitionOffset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// WithReplay runs the processor as the replay r (see Replay).
func WithReplay(r Replay) Option {
	return func(o *options) { o.replay = &r }
}

// replayRun is one Run's replay: the end offsets, which owned slots are done, and how
// the Run is stopped once all are.
type replayRun struct {
	until map[record.TopicPartition]int64
	r     Replay
	cfg   Config
	ac    *admin.Client
	stop  context.CancelFunc

	mu       sync.Mutex
	owned    map[int32]bool
	done     map[int32]bool
	finished bool // every owned slot was done, and the Run was stopped for it
}

func newReplayRun(r *Replay) *replayRun {
	if r == nil {
		return nil
	}
	until := make(map[record.TopicPartition]int64, len(r.Until))
	for _, u := range r.Until {
		until[record.TopicPartition{Topic: u.Topic, Partition: u.Partition}] = u.Offset
	}
	return &replayRun{until: until, r: *r, owned: map[int32]bool{}, done: map[int32]bool{}}
}

func (r *Replay) validate() error {
	if r == nil {
		return nil
	}
	var errs []error
	seen := map[record.TopicPartition]bool{}
	for _, u := range r.Until {
		tp := record.TopicPartition{Topic: u.Topic, Partition: u.Partition}
		switch {
		case u.Topic == "" || u.Partition < 0 || u.Offset < 0:
			errs = append(errs, fmt.Errorf("Replay.Until: %q[%d]@%d: topic, partition >= 0 and offset >= 0 are required", u.Topic, u.Partition, u.Offset))
		case seen[tp]:
			errs = append(errs, fmt.Errorf("Replay.Until: %s[%d] is listed twice", u.Topic, u.Partition))
		}
		seen[tp] = true
	}
	return errors.Join(errs...)
}

// begin connects the replay to a Run.
func (rr *replayRun) begin(ctx context.Context, cfg Config, topics []string, ac *admin.Client, stop context.CancelFunc) error {
	rr.cfg, rr.ac, rr.stop = cfg, ac, stop
	cctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	counts, err := ac.PartitionCounts(cctx, topics)
	if err != nil {
		return fmt.Errorf("processor: replay: %w", err)
	}
	var missing []string
	for _, t := range topics {
		for p := range int32(counts[t]) {
			if _, ok := rr.until[record.TopicPartition{Topic: t, Partition: p}]; !ok {
				missing = append(missing, fmt.Sprintf("%s[%d]", t, p))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("processor: replay: no end offset for input partitions %s (Replay.Until must cover every partition of every input)", strings.Join(missing, ", "))
	}
	return nil
}

// The methods of a nil *replayRun (no WithReplay) leave the processor as it is.

// suppressesOutputs reports whether the replay drops what handlers send (the discard
// sink).
func (rr *replayRun) suppressesOutputs() bool { return rr != nil && rr.r.SuppressOutputs }

// hooks wraps the engine's hooks to follow which slots this instance owns.
func (rr *replayRun) hooks(h group.Hooks) group.Hooks {
	if rr == nil {
		return h
	}
	assigned, revoked := h.Assigned, h.Revoked
	h.Assigned = func(slots []int32) {
		if assigned != nil {
			assigned(slots)
		}
		rr.mu.Lock()
		for _, s := range slots {
			rr.owned[s] = true
		}
		rr.mu.Unlock()
		rr.check()
	}
	h.Revoked = func(slots []int32, lost bool) {
		if revoked != nil {
			revoked(slots, lost)
		}
		rr.mu.Lock()
		for _, s := range slots {
			delete(rr.owned, s)
			delete(rr.done, s)
		}
		rr.mu.Unlock()
	}
	return h
}

// markDone records that slot id reached its end offsets.
func (rr *replayRun) markDone(id int32) {
	rr.mu.Lock()
	rr.done[id] = true
	rr.mu.Unlock()
	rr.check()
}

// check stops the Run once it owns slots and all of them are done.
func (rr *replayRun) check() {
	rr.mu.Lock()
	all := len(rr.owned) > 0 && !rr.finished
	for id := range rr.owned {
		all = all && rr.done[id]
	}
	if all {
		rr.finished = true
	}
	rr.mu.Unlock()
	if all {
		rr.stop()
	}
}

// result is Run's error once the engine stopped cleanly: nil, or in replay mode an error
// wrapping ErrReplayUnfinished while owned slots have not reached their ends.
func (rr *replayRun) result() error {
	if rr == nil {
		return nil
	}
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.finished {
		return nil
	}
	var open []int32
	for id := range rr.owned {
		if !rr.done[id] {
			open = append(open, id)
		}
	}
	slices.Sort(open)
	return fmt.Errorf("%w: partitions %v not done", ErrReplayUnfinished, open)
}

// replaySlot follows one slot's progress toward its end offsets, on the slot's worker.
type replaySlot struct {
	rr       *replayRun
	s        *group.Slot
	end      map[string]int64 // per topic of the slot
	progress map[string]int64 // per topic: every record below it was taken
	reported bool
}

// slot starts following s: its start position is the group's committed offset, else
// where a partition without one starts (earliest, or latest with StartFromLatest).
// bound is the slot's bound: its end offsets in a replay, none without one (rr nil).
func (rr *replayRun) bound(ctx context.Context, s *group.Slot) (bound, error) {
	if rr == nil {
		return unbounded{}, nil
	}
	rs := &replaySlot{rr: rr, s: s, end: map[string]int64{}, progress: map[string]int64{}}
	parts := s.Partitions()
	for _, tp := range parts {
		rs.end[tp.Topic] = rr.until[tp]
	}
	cctx, cancel := context.WithTimeout(ctx, rr.cfg.StartTimeout)
	defer cancel()
	committed, err := rr.ac.Committed(cctx, rr.cfg.Group)
	if err != nil {
		return nil, fmt.Errorf("processor: replay: %w", err)
	}
	spec := admin.Earliest
	if rr.cfg.StartFromLatest {
		spec = admin.Latest
	}
	starts, err := rr.ac.ListOffsets(cctx, parts, spec)
	if err != nil {
		return nil, fmt.Errorf("processor: replay: %w", err)
	}
	for _, tp := range parts {
		if off, ok := committed[tp]; ok {
			rs.progress[tp.Topic] = off
		} else {
			rs.progress[tp.Topic] = starts[tp]
		}
	}
	return rs, nil
}

// keep drops the records at or past their partition's end offset from a batch taken from
// the slot, and returns the kept ones and the bytes of the dropped ones.
func (rs *replaySlot) keep(batch []record.Message) ([]record.Message, int64) {
	kept := batch[:0:0]
	var dropped int64
	all := true
	for i := range batch {
		m := &batch[i]
		rs.progress[m.Topic] = max(rs.progress[m.Topic], m.Offset+1)
		if m.Offset < rs.end[m.Topic] {
			continue
		}
		all = false
		dropped += group.RecordSize(m)
	}
	if all {
		return batch, 0
	}
	for i := range batch {
		if batch[i].Offset < rs.end[batch[i].Topic] {
			kept = append(kept, batch[i])
		}
	}
	return kept, dropped
}

// check reports the slot done, when it is idle, once every topic's position reached its
// end, and until then asks to be called again every replayTick.
func (rs *replaySlot) check(idle func() bool) <-chan time.Time {
	if rs.reported {
		return nil
	}
	if idle() {
		rs.reportIfDone()
	}
	if rs.reported {
		return nil
	}
	return time.After(replayTick)
}

// reportIfDone reports the idle slot done once every topic's position reached its end.
func (rs *replaySlot) reportIfDone() {
	var pos map[string]int64
	for t, end := range rs.end {
		if rs.progress[t] >= end {
			continue
		}
		if pos == nil {
			pos = rs.s.Position()
		}
		if p, ok := pos[t]; ok && p >= end {
			rs.progress[t] = p
			continue
		}
		return
	}
	rs.reported = true
	rs.rr.markDone(rs.s.ID)
}

// replayTick is how often an idle replay slot checks its position.
const replayTick = 100 * time.Millisecond

// discard is the sink of a replay with SuppressOutputs: every output counts as
// acknowledged at once and nothing is produced; offsets are stored as at-least-once does.
type discard struct{ readCommitted bool }

func (d discard) open(cfg group.Config, worker group.WorkerFunc) (*group.Engine, error) {
	cfg.ReadCommitted = d.readCommitted
	return group.New(cfg, worker)
}

func (discard) start(context.Context, context.CancelFunc) {}
func (discard) wait() error                               { return nil }
func (discard) close(time.Duration)                       {}

func (discard) send(_ context.Context, _ lane, f *flight, msgs []*record.Message) error {
	f.begin(len(msgs))
	for _, m := range msgs {
		f.Delivered(m, nil)
	}
	f.handedOver()
	return nil
}

func (discard) settle(l lane, f *flight) error { return l.owner.Store(f.next...) }

// beginReplay connects the processor's replay, if any, to this Run: it checks the end
// offsets against the inputs and keeps an admin client for the slots' start positions.
// The returned func releases it.
func (p *Processor[K, V]) beginReplay(ctx context.Context, topics []string, stop context.CancelFunc) (func(), error) {
	if p.replay == nil {
		return func() {}, nil
	}
	ac, err := admin.Dial(p.cfg.Brokers, toMap(p.cfg.Overrides), p.log)
	if err != nil {
		return nil, fmt.Errorf("processor: replay: %w", err)
	}
	if err := p.replay.begin(ctx, p.cfg, topics, ac, stop); err != nil {
		ac.Close()
		return nil, err
	}
	return ac.Close, nil
}
