package distributed

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
)

// Headers of the claim and release records written to a slice's partition.
const (
	HeaderKind    = "samsa.kind"    // "claim" or "release"
	HeaderNode    = "samsa.node"    // the node's NodeID
	HeaderCluster = "samsa.cluster" // the Run name
)

// Info describes one running process instance; processes get it from their context.
type Info struct {
	// Name is the cluster (Run) name.
	Name string
	// Index is the process's position in the list given to Run.
	Index int
	// Slice is the technical topic partition the process belongs to: Index mod N.
	Slice int32
	// Token is the fencing token of this ownership of the slice: the offset of the claim
	// record the node wrote when it was assigned the slice. Every change of owner writes a
	// new claim, so a later owner always holds a higher token. Pass it with side effects
	// to a store that rejects lower tokens (state's fenced writes) to make a paused or
	// partitioned former owner harmless.
	Token int64
	// Node is the NodeID of the node running the instance.
	Node string
}

type infoKey struct{}

// restartKey carries the node's restart counter to Supervise.
type restartKey struct{}

// InfoFrom returns the process info carried by ctx.
func InfoFrom(ctx context.Context) (Info, bool) {
	i, ok := ctx.Value(infoKey{}).(Info)
	return i, ok
}

// TokenFrom returns the fencing token carried by ctx (see Info.Token).
func TokenFrom(ctx context.Context) (int64, bool) {
	i, ok := InfoFrom(ctx)
	return i.Token, ok
}

// ProcessError is returned by Run when a process failed. After a panic, Err wraps
// ErrPanic.
type ProcessError struct {
	Name  string
	Index int
	Slice int32
	Err   error
}

func (e *ProcessError) Error() string {
	return fmt.Sprintf("distributed: %s process %d (slice %d) failed: %v", e.Name, e.Index, e.Slice, e.Err)
}

func (e *ProcessError) Unwrap() error { return e.Err }

// SliceOf is the slicing rule: process index i of a list runs in slice i mod partitions.
func SliceOf(index, partitions int) int32 { return int32(index % partitions) }

// cluster is one Run: a named process list over one technical topic.
type cluster struct {
	node       *Node
	name       string
	topic      string
	partitions int
	processes  []Process
	prod       *produce.Producer
	reader     *admin.Reader // reads the previous owner's release at each slice start
	live       *liveness     // nil when LivenessMargin is negative

	mu      sync.Mutex
	running map[int]bool // process indexes with a live instance on this node
}

func (c *cluster) indexes(slice int32) []int {
	var idx []int
	for i := range c.processes {
		if SliceOf(i, c.partitions) == slice {
			idx = append(idx, i)
		}
	}
	return idx
}

type result struct {
	index int
	err   error
}

// runSlice is the engine's worker for one slice: claim it, run its processes, and on
// revoke cancel them and wait until all have returned before the rebalance goes on.
func (c *cluster) runSlice(s *group.Slot) error {
	log := c.node.log.With("name", c.name, "slice", s.ID, "node", c.node.cfg.NodeID)
	idx := c.indexes(s.ID)
	if len(idx) == 0 {
		<-s.Context().Done()
		return nil
	}
	assigned := time.Now()
	token, err := c.write(s.Context(), s.ID, "claim", nil)
	if err != nil {
		if s.Context().Err() != nil {
			return nil // revoked before the claim landed: nothing started
		}
		return fmt.Errorf("distributed: %s slice %d: claim: %w", c.name, s.ID, err)
	}
	log.Info("distributed: slice starting", "token", token, "processes", idx)
	obs := c.node.tel.SliceObserver(c.name, s.ID, c.node.cfg.NodeID)

	var failure error
	var stopping time.Time
	finished := map[int]bool{} // returned nil: done until the slice moves
	previousDone := make(chan struct{})
	defer func() { <-previousDone }()
	for round := 0; ; round++ {
		var down <-chan struct{} // nil (never ready) without the liveness check
		if c.live != nil {
			down, _ = c.live.signals()
		}
		started := func() {}
		if round == 0 {
			started = func() {
				obs.Started(token, len(idx), assigned, time.Now())
				go func() { // reading the previous owner's release must not delay the start
					defer close(previousDone)
					obs.Previous(c.previous(s.Context(), s.ID, token))
				}()
			}
		}
		paused, cancelled := c.runRound(s, idx, token, finished, down, obs.Restarted, started, log, &failure, &stopping)
		if failure != nil {
			break
		}
		if !cancelled { // every process finished: keep the slice until it moves
			<-s.Context().Done()
			stopping = time.Now()
			break
		}
		if !paused || s.Context().Err() != nil {
			break
		}
		log.Warn("distributed: slice paused: its processes stopped while the group coordinator is silent; they restart if it answers before the slice moves",
			"stop", time.Since(stopping).Round(time.Millisecond))
		_, up := c.live.signals()
		select {
		case <-s.Context().Done():
		case <-up:
		}
		if s.Context().Err() != nil || s.Lost() {
			break
		}
		log.Info("distributed: slice resumed: restarting its processes", "token", token, "paused", time.Since(stopping).Round(time.Millisecond))
	}
	if stopping.IsZero() {
		stopping = time.Now()
	}
	stopped := time.Now()
	log.Info("distributed: slice stopped", "stop", stopped.Sub(stopping))
	releaseHeaders := obs.Stopped(stopping, stopped, s.Lost(), failure)
	if !s.Lost() {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, err := c.write(rctx, s.ID, "release", releaseHeaders); err != nil {
			log.Warn("distributed: release record", "err", err)
		}
		rcancel()
	}
	return failure
}

// runRound starts the slice's processes that have not finished and waits until they all
// returned: by themselves, after a failure, or cancelled because the slot ended or (down)
// the group coordinator went silent. It reports whether down stopped them and whether
// they were cancelled at all. started runs once the processes are started.
func (c *cluster) runRound(s *group.Slot, idx []int, token int64, finished map[int]bool, down <-chan struct{},
	restarted func(), started func(), log *slog.Logger, failure *error, stopping *time.Time) (paused, cancelled bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make(chan result, len(idx))
	remaining := 0
	for _, i := range idx {
		if finished[i] {
			continue
		}
		info := Info{Name: c.name, Index: i, Slice: s.ID, Token: token, Node: c.node.cfg.NodeID}
		pctx := context.WithValue(ctx, infoKey{}, info)
		pctx = context.WithValue(pctx, restartKey{}, restarted)
		c.setRunning(i, true)
		remaining++
		go func() {
			err := runProcess(pctx, c.processes[i])
			c.setRunning(i, false)
			results <- result{i, err}
		}()
	}
	started()
	for remaining > 0 && *failure == nil {
		select {
		case <-s.Context().Done():
			*stopping = time.Now()
			cancel()
		case <-down:
			*stopping = time.Now()
			paused = true
			cancel()
		case r := <-results:
			remaining--
			switch {
			case r.err != nil && ctx.Err() == nil:
				*failure = &ProcessError{Name: c.name, Index: r.index, Slice: s.ID, Err: r.err}
				log.Error("distributed: process failed; stopping", "index", r.index, "err", r.err)
			case r.err != nil:
				log.Debug("distributed: process returned an error after cancellation", "index", r.index, "err", r.err)
			case ctx.Err() == nil:
				finished[r.index] = true
				log.Info("distributed: process done", "index", r.index)
			}
		}
		if ctx.Err() != nil || *failure != nil {
			cancel()
			for ; remaining > 0; remaining-- {
				<-results
			}
		}
	}
	return paused, ctx.Err() != nil
}

// previousTimeout bounds the read of the record before a claim.
const previousTimeout = 3 * time.Second

// previous returns the headers of the record before the claim at token on slice's
// partition (the previous owner's release, whose headers carry its stop span), read
// through the Run's one reader; nil when there is none or it could not be read in time.
// A revoke cuts the read short, so the stop never waits for it.
func (c *cluster) previous(slotCtx context.Context, slice int32, token int64) []record.Header {
	if token == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(slotCtx, previousTimeout)
	defer cancel()
	prev, err := c.reader.ReadAt(ctx, c.topic, slice, token-1)
	if err != nil {
		c.node.log.Debug("distributed: previous owner's release not read; the start span is not linked to it",
			"name", c.name, "slice", slice, "offset", token-1, "err", err)
		return nil
	}
	return prev.Headers
}

func (c *cluster) setRunning(i int, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running == nil {
		c.running = map[int]bool{}
	}
	if on {
		c.running[i] = true
	} else {
		delete(c.running, i)
	}
}

// stuckError names the processes of slots still running after the stop timeout.
func (c *cluster) stuckError(slots []int32, cause error) error {
	c.mu.Lock()
	var names []string
	for i := range c.running {
		if slices.Contains(slots, SliceOf(i, c.partitions)) {
			names = append(names, fmt.Sprintf("process %d (slice %d)", i, SliceOf(i, c.partitions)))
		}
	}
	c.mu.Unlock()
	slices.Sort(names)
	return fmt.Errorf("%w: %s of %q ignored cancellation for %s; this node keeps the slice until it exits: %w",
		ErrStuck, strings.Join(names, ", "), c.name, c.node.cfg.StopTimeout, cause)
}

// runProcess runs p, turning a panic into an error wrapping ErrPanic.
func runProcess(ctx context.Context, p Process) (err error) {
	defer group.Recover(&err, "process")
	return p(ctx)
}

// writeBackoff paces the retries of a claim or release record.
var writeBackoff = group.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}

// write produces a claim or release record, with the extra (trace) headers, to the
// slice's partition and returns its offset once acknowledged, retrying until ctx ends.
func (c *cluster) write(ctx context.Context, slice int32, kind string, extra []record.Header) (int64, error) {
	var last error
	for attempt := 0; ; attempt++ {
		m := &record.Message{
			Topic:     c.topic,
			Partition: slice,
			Key:       []byte(c.name),
			Value:     []byte(kind + " " + c.node.cfg.NodeID),
			Headers: append([]record.Header{
				{Key: HeaderKind, Value: []byte(kind)},
				{Key: HeaderNode, Value: []byte(c.node.cfg.NodeID)},
				{Key: HeaderCluster, Value: []byte(c.name)},
			}, extra...),
			Timestamp: time.Now(),
		}
		ack := make(ackChan, 1)
		if err := c.prod.Produce(ctx, m, ack); err != nil {
			last = err
		} else {
			select {
			case err := <-ack:
				if err == nil {
					return m.Offset, nil
				}
				last = err
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		c.node.log.Warn("distributed: "+kind+" record not written, retrying", "name", c.name, "slice", slice, "err", last)
		if !writeBackoff.Sleep(ctx, attempt) {
			return 0, fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		}
	}
}

type ackChan chan error

func (a ackChan) Delivered(_ *record.Message, err error) { a <- err }

func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil {
		host = "node"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}
