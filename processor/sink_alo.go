package processor

import (
	"context"
	"time"

	"github.com/samsa-go/samsa/internal/failpoint"
	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
)

// atLeastOnce produces through one idempotent producer and stores a batch's offsets once
// its outputs and those of every earlier batch of the slot are acknowledged; the
// consumer commits stored offsets every CommitInterval and on revoke.
type atLeastOnce struct {
	prod *produce.Producer
}

func newAtLeastOnce(pcfg produce.Config) (*atLeastOnce, error) {
	prod, err := produce.New(pcfg)
	if err != nil {
		return nil, err
	}
	return &atLeastOnce{prod: prod}, nil
}

func (*atLeastOnce) open(cfg group.Config, worker group.WorkerFunc) (*group.Engine, error) {
	return group.New(cfg, worker)
}

func (*atLeastOnce) start(context.Context, context.CancelFunc) {}
func (*atLeastOnce) wait() error                               { return nil }

func (a *atLeastOnce) send(ctx context.Context, _ lane, f *flight, msgs []*record.Message) error {
	f.begin(len(msgs))
	a.prod.ProduceBatch(ctx, msgs, f)
	f.handedOver()
	return nil
}

func (a *atLeastOnce) settle(l lane, f *flight) error {
	if err, failed := f.outcome(); err != nil {
		return &outputsFailed{err: err, failed: failed}
	}
	failpoint.Hit("alo-before-store") // outputs acknowledged, offsets not stored
	return l.owner.Store(f.next...)
}

func (a *atLeastOnce) close(timeout time.Duration) { a.prod.Close(timeout) }
