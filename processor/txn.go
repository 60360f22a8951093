package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/samsa-go/samsa/internal/effect"
	"github.com/samsa-go/samsa/internal/failpoint"
	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
)

// txn runs the exactly-once mode: one transactional producer per processor instance
// (KIP-447: zombies are fenced through the consumer group generation carried by the
// offsets sent to the transaction). Workers produce their batches' outputs into the open
// transaction and register the offsets after each batch; every CommitInterval (and on
// revoke and shutdown) the coordinator sends those offsets with the group metadata and
// commits. An abortable error aborts the transaction and rewinds every partition that had
// work in it to its committed offset. A fatal error of the fencing kind (the coordinator
// bumped the producer's epoch, as it does when it aborts a transaction that outlived
// transaction.timeout.ms during a broker outage) replaces the producer with a new one of
// the same transactional id and rewinds likewise; after maxRecoveries in a row without a
// successful commit, or on any other fatal error, the processor stops. Zombies stay
// fenced either way: the group generation in the offsets decides, not the producer.
//
// Locks: workers hold mu.RLock while producing and registering a batch; a commit or an
// abort holds mu.Lock, so no batch straddles a transaction boundary.
type txn struct {
	newProd func() (*produce.Producer, error)
	prod    *produce.Producer // replaced under mu.Lock when fenced
	timeout time.Duration     // bound of each transactional call
	// life is Run's context. While it lives, a retriable failure to send the offsets,
	// commit or abort (the coordinator is out of reach: "Timed out waiting for operation
	// to finish") is retried however long the broker stays out of reach, instead of
	// ending Run.
	life context.Context
	log  *slog.Logger

	mu      sync.RWMutex
	pmu     sync.Mutex                      // guards pending and slots among mu.RLock holders
	pending map[record.TopicPartition]int64 // offsets of batches produced in the open transaction
	// pendingMeta is the commit metadata of pending's offsets (a checkpoint's applied
	// offset, see Recorder), when there is any.
	pendingMeta map[record.TopicPartition]string
	slots       map[int32]uint64 // slot -> epoch with work in the open transaction
	// owed are the state effects staged by the batches in the open transaction (with a
	// checkpoint), in the order each slot produced them: made once it commits, dropped
	// when it aborts.
	owed []owedEffects
	// pendingFrom is, per partition with metadata, the first input offset in the open
	// transaction: owed effects (see catchUp) start there at the earliest.
	pendingFrom map[record.TopicPartition]int64
	// effectsErr is set when a committed transaction's effects could not be made: no
	// later transaction may commit (its effects would be made, the earlier ones not).
	effectsErr error
	dead       map[uint64]bool // slot epochs whose work was aborted (written under mu.Lock)
	mustAbort  bool            // an output was refused: the transaction cannot commit
	aborts     int             // consecutive aborts, for the poison-output guard
	recovered  int             // producers replaced since the last commit

	// A librdkafka call that ignores its timeout (librdkafka #5456, #5511:
	// SendOffsetsToTransaction can block for good once the group coordinator went away)
	// wedges the producer: it is replaced, and closed by wedgedWG's goroutine only when
	// that call returns (closing it under a running call is not safe).
	wedgeGrace time.Duration  // how far past its own timeout a call may run
	wedged     chan struct{}  // closed when the overrunning call returns; nil if none
	wedgedWG   sync.WaitGroup // goroutines closing wedged producers
}

// maxRecoveries bounds the producers replaced without a successful commit in between:
// a producer fenced again at once means another live instance uses the same
// transactional id, and the two must not keep fencing each other.
const maxRecoveries = 3

// maxConsecutiveAborts stops the processor when the same work keeps aborting (an output
// the broker refuses permanently would otherwise abort, rewind and fail forever).
const maxConsecutiveAborts = 5

var errTxnAborted = errors.New("transaction aborted; partition rewound")

// effectsBound bounds how long a committed transaction's state effects are retried while
// the store is out of reach. The commit holds every worker and the rebalance callback
// meanwhile; past it the processor stops and the effects are owed (see catchUp).
const effectsBound = time.Minute

// fromSep separates, in an exactly-once commit's metadata, the applied offset from the
// first input offset of the transaction (see catchUp).
const fromSep = ";from="

// owedEffects are one batch's staged state effects and the lane that handled it.
type owedEffects struct {
	l    lane
	b    *effect.Batch
	from record.Offset // the batch's first input, for logs
}

// groupMember is the consumer group member whose generation the transactions' offsets
// carry (the group engine): the coordinator fences a zombie by it.
type groupMember interface {
	GroupMetadata() (*produce.GroupMetadata, error)
}

// newTxn makes the transactional producer; life is Run's context (see txn.life).
func newTxn(newProd func() (*produce.Producer, error), timeout time.Duration, life context.Context, log *slog.Logger) (*txn, error) {
	prod, err := newProd()
	if err != nil {
		return nil, err
	}
	return &txn{newProd: newProd, prod: prod, timeout: timeout, log: log, wedgeGrace: 5 * time.Second, life: life,
		pending: map[record.TopicPartition]int64{}, pendingMeta: map[record.TopicPartition]string{}, pendingFrom: map[record.TopicPartition]int64{}, slots: map[int32]uint64{}, dead: map[uint64]bool{}}, nil
}

// close closes the current producer, waiting up to timeout for its deliveries, and
// waits as long for wedged producers to be closed.
func (t *txn) close(timeout time.Duration) {
	t.mu.Lock()
	if returned := t.wedged; returned != nil { // Run is ending on the wedged producer
		t.wedged = nil
		prod := t.prod
		t.wedgedWG.Go(func() {
			<-returned
			prod.Close(timeout)
		})
	} else {
		t.prod.Close(timeout)
	}
	t.mu.Unlock()
	done := make(chan struct{})
	go func() { t.wedgedWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		t.log.Error("processor: exactly-once: a replaced producer's call still has not returned; leaving it behind")
	}
}

// begin registers the transactional id (fencing a previous instance with the same id)
// and opens the first transaction.
func (t *txn) begin(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.beginLocked(ctx)
}

func (t *txn) beginLocked(ctx context.Context) error {
	err := t.untilReached(ctx, "init transactions", 10, t.prod.InitTransactions)
	if err != nil {
		return fmt.Errorf("processor: exactly-once: %w", err)
	}
	if err := t.prod.BeginTransaction(); err != nil {
		return fmt.Errorf("processor: exactly-once: %w", err)
	}
	return nil
}

// call runs one transactional operation bounded by the transaction timeout: past it the
// coordinator aborts the transaction anyway, and an unbounded call would hold mu (and
// every worker) through a broker outage. A call that overruns its own timeout by
// wedgeGrace wedges the producer: call returns a fencing-class fatal error, so the
// producer is replaced as if fenced. Called under mu.Lock.
func (t *txn) call(ctx context.Context, name string, op func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	res := make(chan error, 1)
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		res <- op(ctx)
	}()
	timer := time.NewTimer(t.timeout + t.wedgeGrace)
	defer timer.Stop()
	select {
	case err := <-res:
		return err
	case <-timer.C:
		t.wedged = returned
		t.log.Error("processor: exactly-once: a transactional call overran its timeout; replacing the producer",
			"op", name, "timeout", t.timeout, "waited", t.timeout+t.wedgeGrace)
		te := &produce.TxnError{Op: name, Err: errWedged, Fatal: true, Fenced: true}
		if t.prod != nil {
			te.TransactionalID = t.prod.TransactionalID()
		}
		return te
	}
}

var errWedged = errors.New("the call did not return within its timeout (librdkafka #5456)")

// produce puts a batch's outputs into the open transaction and registers its offsets.
// It returns errAbandoned when the lane's work was aborted: its rewind is coming.
func (t *txn) produce(ctx context.Context, l lane, f *flight, msgs []*record.Message) error {
	if !t.rlock(ctx, l.ctx) {
		return errAbandoned // revoked (or Run ending) while a commit or abort held the lock
	}
	defer t.mu.RUnlock()
	if t.dead[l.epoch] || !l.owner.Owned() {
		return errAbandoned // aborted (a rewind is coming) or revoked: not ours to commit
	}
	f.begin(len(msgs))
	// A message refused before it was queued (too large, queue full until ctx ended)
	// leaves librdkafka's transaction intact, so it must be aborted here, or the offsets
	// would commit without this output.
	refused := t.prod.ProduceBatch(ctx, msgs, f) > 0
	f.handedOver()
	t.pmu.Lock()
	t.slots[l.slot] = l.epoch
	if refused {
		t.mustAbort = true
		t.pmu.Unlock()
		return nil
	}
	if f.effects.Pending() > 0 {
		first := &f.inputs[0]
		t.owed = append(t.owed, owedEffects{l: l, b: f.effects,
			from: record.Offset{TopicPartition: record.TopicPartition{Topic: first.Topic, Partition: first.Partition}, Offset: first.Offset}})
	}
	for _, o := range f.next {
		if o.Offset > t.pending[o.TopicPartition] {
			t.pending[o.TopicPartition] = o.Offset
			if o.Metadata != "" {
				t.pendingMeta[o.TopicPartition] = o.Metadata
			}
		}
		if o.Metadata != "" {
			if _, ok := t.pendingFrom[o.TopicPartition]; !ok {
				t.pendingFrom[o.TopicPartition] = firstOffset(f.inputs, o.Topic)
			}
		}
	}
	t.pmu.Unlock()
	return nil
}

// rlock takes mu.RLock for a worker, or gives up when the worker's slot is revoked or ctx
// ends first. A commit or abort holds mu.Lock, and while the coordinator is out of reach
// either is retried for as long as the outage lasts: a worker waiting on a plain RLock
// would outlive its slot's revoke timeout and fail Run. The wait polls (TryRLock every
// 5 ms) only while a commit or abort holds the lock.
func (t *txn) rlock(ctx, slot context.Context) bool {
	if t.mu.TryRLock() {
		return true
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-slot.Done():
			return false
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
		if t.mu.TryRLock() {
			return true
		}
	}
}

// commit commits the open transaction with the registered offsets, as member's, and opens
// the next. It returns the slots to rewind when the transaction had to be aborted.
func (t *txn) commit(ctx context.Context, member groupMember) (rewind []group.Epoch, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.commitLocked(ctx, member)
}

func (t *txn) commitLocked(ctx context.Context, member groupMember) (rewind []group.Epoch, err error) {
	if len(t.pending) == 0 && len(t.slots) == 0 {
		return nil, nil
	}
	if t.mustAbort {
		t.log.Warn("processor: exactly-once: an output was refused; aborting the transaction", "partitions", len(t.slots))
		return t.abortLocked(ctx)
	}
	if t.effectsErr != nil {
		// An earlier transaction's effects are owed to the partitions' next owners, who
		// make them from its records; committing this one would make its effects first.
		if _, err := t.abortLocked(ctx); err != nil {
			t.log.Warn("processor: exactly-once: abort after owed state effects failed", "err", err)
		}
		return nil, t.effectsErr
	}
	offsets := make([]record.Offset, 0, len(t.pending))
	for _, tp := range slices.SortedFunc(maps.Keys(t.pending), func(a, b record.TopicPartition) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition - b.Partition)
	}) {
		md := t.pendingMeta[tp]
		if from, ok := t.pendingFrom[tp]; ok && md != "" {
			md += fromSep + strconv.FormatInt(from, 10)
		}
		offsets = append(offsets, record.Offset{TopicPartition: tp, Offset: t.pending[tp], Metadata: md})
	}
	failpoint.Hit("eos-before-send-offsets") // outputs produced, nothing committed
	err = t.untilReached(ctx, "send offsets to transaction", 4, func(ctx context.Context) error {
		md, err := member.GroupMetadata()
		if err != nil {
			return err
		}
		return t.prod.SendOffsets(ctx, offsets, md)
	})
	if err == nil {
		failpoint.Hit("eos-before-commit") // offsets sent, transaction not committed
		err = t.untilReached(ctx, "commit transaction", 4, t.prod.CommitTransaction)
	}
	if err == nil {
		failpoint.Hit("eos-after-commit")
		effectsErr := t.makeEffectsLocked(ctx)
		t.aborts = 0
		t.recovered = 0
		clear(t.pending)
		clear(t.pendingMeta)
		clear(t.pendingFrom)
		clear(t.slots)
		if err := t.prod.BeginTransaction(); err != nil {
			return nil, fmt.Errorf("processor: exactly-once: %w", err)
		}
		if effectsErr != nil {
			t.effectsErr = effectsErr
			return nil, effectsErr
		}
		return nil, nil
	}
	var te *produce.TxnError
	if errors.As(err, &te) && te.Fatal {
		return t.recoverLocked(ctx, err)
	}
	t.log.Warn("processor: exactly-once: aborting transaction", "partitions", len(t.pending), "err", err)
	return t.abortLocked(ctx)
}

// abort aborts the open transaction; the slots that had work in it must be rewound.
func (t *txn) abort(ctx context.Context) ([]group.Epoch, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.abortLocked(ctx)
}

func (t *txn) abortLocked(ctx context.Context) ([]group.Epoch, error) {
	if len(t.pending) == 0 && len(t.slots) == 0 && !t.mustAbort {
		return nil, nil // nothing in the transaction: nothing to abort or rewind
	}
	t.aborts++
	if t.aborts > maxConsecutiveAborts {
		return nil, fmt.Errorf("processor: exactly-once: %d consecutive transactions aborted; an output is probably refused permanently (too large, not authorized)", t.aborts-1)
	}
	if err := t.untilReached(ctx, "abort transaction", 4, t.prod.AbortTransaction); err != nil {
		var te *produce.TxnError
		if errors.As(err, &te) && te.Fatal {
			return t.recoverLocked(ctx, err)
		}
		return nil, fmt.Errorf("processor: exactly-once: %w", err)
	}
	rewind := t.discardLocked()
	if err := t.prod.BeginTransaction(); err != nil {
		return nil, fmt.Errorf("processor: exactly-once: %w", err)
	}
	return rewind, nil
}

// makeEffectsLocked makes the state effects of the transaction just committed, batch by
// batch in each slot's order, before the next transaction begins: the records' outputs
// and offsets are committed, so their effects are owed. The effects are made even when
// ctx ends meanwhile (Run stopping), and a store out of reach (Redis down) is retried
// for up to effectsBound; a store that refuses (a conflict, access denied) stops the
// processor, except for a slot no longer owned, whose next owner makes the effects
// itself. Effects not made when the processor stops are made by the partition's next
// owner, which reads the records again (see catchUp).
func (t *txn) makeEffectsLocked(ctx context.Context) error {
	if len(t.owed) == 0 {
		return nil
	}
	failpoint.Hit("eos-before-effects") // transaction committed, its state effects not made
	owed := t.owed
	t.owed = nil
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), effectsBound)
	defer cancel()
	gaveUp := map[uint64]bool{} // slot epochs whose effects are left to the next owner
	for i, o := range owed {
		if gaveUp[o.l.epoch] {
			o.b.Drop()
			continue
		}
		for attempt := 0; ; attempt++ {
			err := o.b.Commit(ctx)
			if err == nil {
				break
			}
			log := t.log.With("topic", o.from.Topic, "partition", o.from.Partition, "offset", o.from.Offset)
			if permanent(err) && !o.l.owner.Owned() {
				log.Warn("processor: exactly-once: state effects of a committed transaction refused after the partition moved; its next owner makes them", "err", err)
				gaveUp[o.l.epoch] = true
				o.b.Drop()
				break
			}
			if permanent(err) || ctx.Err() != nil {
				for _, rest := range owed[i:] {
					rest.b.Drop()
				}
				return &Error{Topic: o.from.Topic, Partition: o.from.Partition, Offset: o.from.Offset, Stage: StageEffects,
					Err: fmt.Errorf("state effects of a committed transaction not made (the partition's next owner makes them from its records): %w", err)}
			}
			log.Warn("processor: exactly-once: state effects not made, retrying", "attempt", attempt+1, "err", err)
			(Backoff{}).Sleep(ctx, attempt)
		}
	}
	return nil
}

// discardLocked forgets the open transaction's work and returns the slots to rewind.
func (t *txn) discardLocked() []group.Epoch {
	for _, o := range t.owed {
		o.b.Drop() // the records are handled again
	}
	t.owed = nil
	var rewind []group.Epoch
	for _, id := range slices.Sorted(maps.Keys(t.slots)) {
		rewind = append(rewind, group.Epoch{Slot: id, Epoch: t.slots[id]})
		t.dead[t.slots[id]] = true // until rewound, these workers may not produce into the next transaction
	}
	clear(t.pending)
	clear(t.pendingMeta)
	clear(t.pendingFrom)
	clear(t.slots)
	t.mustAbort = false
	return rewind
}

// recoverLocked handles a fatal error: a fenced producer is replaced by a new one with the
// same transactional id (whose registration aborts whatever the old one left open) and
// the open transaction's slots are rewound; any other fatal error is returned.
func (t *txn) recoverLocked(ctx context.Context, cause error) ([]group.Epoch, error) {
	var te *produce.TxnError
	if !errors.As(cause, &te) || !te.Fenced {
		return nil, fmt.Errorf("processor: exactly-once: %w", cause)
	}
	if t.recovered >= maxRecoveries {
		return nil, fmt.Errorf("processor: exactly-once: producer fenced %d times without a successful commit in between (does another running instance use the same TransactionalID or InstanceID?): %w", t.recovered+1, cause)
	}
	t.recovered++
	t.log.Warn("processor: exactly-once: producer fenced; replacing it and rewinding the open transaction's partitions",
		"partitions", len(t.slots), "attempt", t.recovered, "err", cause)
	if old, returned := t.prod, t.wedged; returned != nil {
		t.wedged = nil
		t.wedgedWG.Go(func() {
			<-returned
			old.Abandon(t.timeout)
		})
	} else {
		old.Abandon(t.timeout) // acks of its outputs fail now, not never
	}
	rewind := t.discardLocked()
	prod, err := t.newProd()
	if err != nil {
		return nil, fmt.Errorf("processor: exactly-once: replacing fenced producer: %w", err)
	}
	t.prod = prod
	if err := t.beginLocked(ctx); err != nil {
		return nil, err
	}
	return rewind, nil
}

// untilReached runs op (each call bounded by the transaction timeout) and retries its
// retriable errors: up to attempts times within ctx, and past that, or past ctx's end,
// for as long as Run's context lives. A transactional call that times out goes on in
// the background, and librdkafka takes no other transactional call until the same one
// is made again and returns its outcome: an abort after a timed-out commit or offset
// send fails with "Conflicting commit_transaction API call is already in progress"
// (retriable) for as long as the commit is not resumed, even once the network is back.
// So sending offsets, committing and aborting are each retried with the same call, never
// given up for another. Ending the transaction cannot be skipped either: the next can
// begin only after it, and an instance cut off from the coordinator can only wait for
// the network to heal (meanwhile the coordinator aborts the transaction itself at the
// transaction timeout, and the resumed call reports it: the transaction is then aborted
// or the producer replaced). Giving up instead would end Run over an outage that
// at-least-once mode rides out.
func (t *txn) untilReached(ctx context.Context, name string, attempts int, op func(context.Context) error) error {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		callCtx := ctx
		if ctx.Err() != nil {
			callCtx = t.life
		}
		err := t.call(callCtx, name, op)
		var te *produce.TxnError
		if err == nil || !errors.As(err, &te) || !te.Retriable {
			if attempt > 0 {
				t.log.Info("processor: exactly-once: coordinator reached again", "op", name, "attempts", attempt+1, "after", time.Since(start).Round(time.Millisecond), "err", err)
			}
			return err
		}
		withinCaller := attempt+1 < attempts && ctx.Err() == nil
		if !withinCaller && t.life.Err() != nil {
			return err // shutting down: the caller's attempts are spent
		}
		t.log.Warn("processor: exactly-once: transactional call failed (retriable); retrying until the coordinator answers",
			"op", name, "attempt", attempt+1, "since", time.Since(start).Round(time.Millisecond), "err", err)
		sleepCtx := ctx
		if !withinCaller {
			sleepCtx = t.life
		}
		(Backoff{Initial: 50 * time.Millisecond, Max: 2 * time.Second}).Sleep(sleepCtx, attempt)
	}
}

// firstOffset returns the offset of the first of inputs read from topic.
func firstOffset(inputs []record.Message, topic string) int64 {
	for i := range inputs {
		if inputs[i].Topic == topic {
			return inputs[i].Offset
		}
	}
	return 0
}
