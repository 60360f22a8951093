package processor

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
)

// exactlyOnce produces every slot's outputs into one transaction per instance and commits
// it, with the input offsets, every CommitInterval and on revoke (see txn). Inputs are read
// read_committed; offsets never go through the consumer.
type exactlyOnce struct {
	t              *txn
	commitInterval time.Duration
	drainTimeout   time.Duration
	log            *slog.Logger

	eng *group.Engine
	wg  sync.WaitGroup
	err error // the coordinator's error that stopped Run; read after wg.Wait
}

// newExactlyOnce registers the transactional producer (fencing a previous instance with
// the same transactional id) and opens the first transaction; ctx is Run's.
func newExactlyOnce(ctx context.Context, pcfg produce.Config, cfg Config, log *slog.Logger) (*exactlyOnce, error) {
	t, err := newTxn(func() (*produce.Producer, error) { return produce.New(pcfg) }, cfg.TransactionTimeout, ctx, log)
	if err != nil {
		return nil, fmt.Errorf("processor: %w", err)
	}
	if err := t.begin(ctx); err != nil {
		t.close(cfg.StopTimeout)
		return nil, err
	}
	return &exactlyOnce{t: t, commitInterval: cfg.CommitInterval, drainTimeout: cfg.StopTimeout, log: log}, nil
}

// open makes the engine with offsets committed through the transactions, inputs read
// read_committed, and the transaction committed (or aborted, when the assignment was
// lost) before partitions are revoked.
func (e *exactlyOnce) open(cfg group.Config, worker group.WorkerFunc) (*group.Engine, error) {
	cfg.TxnOffsets = true
	cfg.ReadCommitted = true
	cfg.Hooks.BeforeUnassign = e.beforeUnassign
	eng, err := group.New(cfg, worker)
	if err != nil {
		return nil, err
	}
	e.eng = eng
	return eng, nil
}

// start starts the commit cadence.
func (e *exactlyOnce) start(ctx context.Context, stop context.CancelFunc) {
	eng := e.eng
	e.wg.Go(func() {
		tick := time.NewTicker(e.commitInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			rewind, err := e.t.commit(ctx, eng)
			if err == nil && len(rewind) > 0 {
				err = eng.Rewind(ctx, rewind)
			}
			if err != nil && ctx.Err() == nil {
				e.err = err
				stop()
				return
			}
		}
	})
}

func (e *exactlyOnce) wait() error {
	e.wg.Wait()
	return e.err
}

// beforeUnassign commits the revoked partitions' finished batches while the group
// generation that owns them is current; a lost assignment aborts instead. It runs on the
// engine's poll goroutine, after the revoked slots' workers returned. An assignment lost
// to a network partition cannot be aborted until the coordinator is reachable again: the
// abort is retried until then (or until Run's context ends), so the instance rejoins when
// the network heals instead of ending Run.
func (e *exactlyOnce) beforeUnassign(slots []int32, lost bool) ([]group.Epoch, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.drainTimeout)
	defer cancel()
	var rewind []group.Epoch
	var err error
	if lost {
		rewind, err = e.t.abort(ctx)
	} else {
		rewind, err = e.t.commit(ctx, e.eng)
	}
	if err != nil {
		e.log.Error("processor: exactly-once: transaction on revoke failed", "err", err)
		return nil, err // the engine stops; Run returns it
	}
	return slices.DeleteFunc(rewind, func(ep group.Epoch) bool { return slices.Contains(slots, ep.Slot) }), nil
}

func (e *exactlyOnce) send(ctx context.Context, l lane, f *flight, msgs []*record.Message) error {
	return e.t.produce(ctx, l, f, msgs)
}

// settle has nothing to store: the batch's offsets went into the transaction with its
// outputs. A failed output cannot be retried or dead-lettered on its own: the transaction
// cannot commit, so the coordinator aborts it and rewinds the slot.
func (e *exactlyOnce) settle(l lane, f *flight) error {
	if err, failed := f.outcome(); err != nil {
		e.log.Warn("processor: exactly-once: output not acknowledged; the transaction will abort", "partition", l.slot, "failed", len(failed), "err", err)
	}
	return nil
}

func (e *exactlyOnce) close(timeout time.Duration) { e.t.close(timeout) }
