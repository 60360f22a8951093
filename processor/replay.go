package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
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

// Replay makes a processor re-run its inputs up to fixed end offsets and then stop, as
// KaufmannEx's reinit_service does: give it to WithReplay. Handlers run as usual (their
// state effects included: that is the point of a replay), records at or past a
// partition's end offset are not handled, and Run returns nil once every partition this
// instance owns has been handled up to its end and its offsets are committed.
//
// Run a replay in its own consumer group (a fresh group starts at the earliest offsets;
// see Config.StartFromLatest), so the live processor's group and offsets are untouched,
// and as one instance: with several, each stops once the partitions it owns are done.
// A replay that is stopped early (Run's context ends) commits what it finished and
// returns an error wrapping ErrReplayUnfinished; running it again resumes from there.
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

// ReplayPlan is what `samsa replay plan` writes: a Replay with what it was made for.
type ReplayPlan struct {
	// Group is the consumer group the replay runs in.
	Group string `json:"group"`
	// Namespace is the state namespace the replay writes to, when it rebuilds a table.
	Namespace string    `json:"namespace,omitempty"`
	Created   time.Time `json:"created"`
	Replay
}

// ReadReplayPlan reads a plan written by `samsa replay plan`.
func ReadReplayPlan(path string) (ReplayPlan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ReplayPlan{}, fmt.Errorf("processor: replay plan: %w", err)
	}
	var p ReplayPlan
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return ReplayPlan{}, fmt.Errorf("processor: replay plan %s: %w", path, err)
	}
	if len(p.Until) == 0 {
		return ReplayPlan{}, fmt.Errorf("processor: replay plan %s: no end offsets (\"until\" is empty)", path)
	}
	return p, nil
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

// hooks wraps the engine's hooks to follow which slots this instance owns.
func (rr *replayRun) hooks(h group.Hooks) group.Hooks {
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

// result is Run's error in replay mode once the engine stopped cleanly.
func (rr *replayRun) result() error {
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
func (rr *replayRun) slot(ctx context.Context, s *group.Slot) (*replaySlot, error) {
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

// filter drops the records at or past their partition's end offset from a batch taken
// from the slot, and returns the kept ones and the bytes of the dropped ones.
func (rs *replaySlot) filter(batch []record.Message) ([]record.Message, int64) {
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

// idle is called when the slot holds nothing and no batch is in flight: it reports the
// slot done once every topic's position reached its end.
func (rs *replaySlot) idle() {
	if rs.reported {
		return
	}
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

// replayFilter drops a batch's records at or past their end offsets (their bytes go back
// to the slot) and returns the rest, which may be none, and their size.
func (pl *pipeline[K, V]) replayFilter(inputs []record.Message, size int64) ([]record.Message, int64) {
	kept, dropped := pl.replay.filter(inputs)
	if dropped > 0 {
		pl.s.Release(dropped)
		size -= dropped
	}
	if len(kept) == 0 {
		pl.s.Release(size)
	}
	return kept, size
}

// replayWake checks, when the slot is idle, whether the replay of the slot is done, and
// returns when to check again (nil: never, or not in replay mode).
func (pl *pipeline[K, V]) replayWake() <-chan time.Time {
	if pl.replay == nil || pl.replay.reported {
		return nil
	}
	if n, _, _ := pl.s.Peek(); n == 0 && len(pl.inflight) == 0 {
		pl.replay.idle()
	}
	if pl.replay.reported {
		return nil
	}
	return time.After(replayTick)
}
