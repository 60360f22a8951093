package processor

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/samsa-go/samsa/internal/effect"
	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/record"
)

// sink is the last stage: it takes every slot's handled batches, produces their outputs
// and gets their input offsets committed. There are two: at-least-once (produce, await the
// acknowledgements, store the offsets in batch order for the consumer to commit) and
// exactly-once (produce into a transaction that also carries the offsets; it owns the
// commit cadence and replaces a fenced producer). Nothing outside a sink knows which one
// runs. A sink knows a slot only through the lane it is given with each batch.
//
// send and settle are called from slot workers, concurrently for different slots and in
// batch order within one; open, start, wait and close from Run.
type sink interface {
	// open makes the group engine whose slots' batches the sink delivers, from cfg
	// adjusted to the sink (offsets through transactions, read_committed, rebalance
	// hooks), with worker as the slots' worker. It is called once, before start.
	open(cfg group.Config, worker group.WorkerFunc) (*group.Engine, error)
	// start begins the sink's own work while the engine runs (exactly-once: the commit
	// cadence), until ctx ends. stop ends Run with the error wait will return.
	start(ctx context.Context, stop context.CancelFunc)
	// wait waits for the sink's own work to end once Run's context is done, and returns
	// the error that made it stop Run, if any.
	wait() error
	// send produces msgs as f's next delivery round; each outcome is reported to f. It
	// returns errAbandoned when the lane's work can no longer commit.
	send(ctx context.Context, l lane, f *flight, msgs []*record.Message) error
	// settle finishes f once its round completed, in batch order per slot. A sink that
	// leaves failed outputs to the error policy returns *outputsFailed; the pipeline then
	// resends, dead-letters, skips or stops (see decide).
	settle(l lane, f *flight) error
	// close releases the producer, waiting up to timeout for outstanding deliveries.
	close(timeout time.Duration)
}

// lane is what a sink knows of the slot whose batch it delivers: which ownership of which
// slot the batch belongs to, and the owner to ask. It is a small value, so a sink is
// tested with a fake owner instead of a consumer group.
type lane struct {
	slot  int32
	epoch uint64          // the ownership (group.Slot.Epoch)
	ctx   context.Context // ends when the ownership does
	owner owner
}

// owner is what a sink asks of a slot (*group.Slot in a processor).
type owner interface {
	// Store hands offsets to the consumer, to be committed (at-least-once); it fails
	// with group.ErrNotOwned once the ownership ended.
	Store(offsets ...record.Offset) error
	// Owned reports whether the ownership is still current (its offsets may be committed).
	Owned() bool
}

// outputsFailed reports the outputs of a batch that were not acknowledged.
type outputsFailed struct {
	err    error
	failed []*record.Message
}

func (e *outputsFailed) Error() string { return e.err.Error() }
func (e *outputsFailed) Unwrap() error { return e.err }

// flight is one batch after its handler: its outputs on their way to the broker, then its
// offsets on their way to the group.
type flight struct {
	inputs  []record.Message
	outs    []record.Message
	next    []record.Offset
	effects *effect.Batch // state effects staged by the handler; nil without staging
	doneCh  chan<- *flight

	ctx      context.Context // the batch's (its span)
	sendCtx  context.Context // the send's; nil without outputs
	queuedAt time.Time       // when the batch's first record was queued
	sentAt   time.Time
	held     int64 // bytes counted against the slot: inputs and outputs

	// Worker goroutine only:
	roundDone bool // the current delivery round completed
	// A batch handled in units (Config.Concurrency): units not settled yet (finished
	// without outputs, or their outputs' round completed), the units' outputs, when its
	// handling began, and the first error a unit ended with (the batch must not settle).
	pending    int
	unfinished int
	unitOuts   [][]record.Message
	handledAt  time.Time
	handleErr  error
	// doneUnits holds the inputs of the batch that are done: their outputs acknowledged
	// (or none to produce, or done by a previous owner), for the commit's metadata while
	// an earlier batch has not settled (see doneset.go).
	doneUnits [][]record.Message
	marks     []*doneMark // its units' (see doneMark)
	mark      *doneMark   // a unit's delivery round: the unit's
	// parent is the batch a unit's delivery round belongs to; nil for a batch's own.
	parent       *flight
	retries      int  // delivery rounds retried
	deadLettered bool // the inputs were sent to the dead-letter topic instead

	remaining atomic.Int64
	mu        sync.Mutex
	failed    []*record.Message
	err       error
}

// Delivered is called on the producer's delivery goroutine, or by send for a message the
// client refused.
func (f *flight) Delivered(m *record.Message, err error) {
	if err != nil {
		f.mu.Lock()
		f.failed = append(f.failed, m)
		if f.err == nil {
			f.err = err
		}
		f.mu.Unlock()
	}
	if f.remaining.Add(-1) == 0 {
		f.doneCh <- f
	}
}

// begin starts a delivery round of n messages. The round completes (f goes to doneCh)
// after n outcomes and handedOver.
func (f *flight) begin(n int) {
	f.mu.Lock()
	f.failed, f.err = nil, nil
	f.mu.Unlock()
	f.roundDone = false
	f.remaining.Store(int64(n) + 1)
}

// handedOver ends the round's sending: until then the round cannot complete, however
// fast the acknowledgements come.
func (f *flight) handedOver() { f.Delivered(nil, nil) }

// forgive clears the round's failure: the error policy gave up on the failed outputs.
func (f *flight) forgive() {
	f.mu.Lock()
	f.failed, f.err = nil, nil
	f.mu.Unlock()
}

// outcome returns the current round's first error and failed messages.
func (f *flight) outcome() (error, []*record.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err, f.failed
}
