package processor

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/internal/produce"
)

// TestTxnCallWedged: a transactional call that overruns its own timeout (librdkafka
// #5456) is reported as a fencing-class fatal error, so the producer gets replaced, and
// the overrunning call is remembered until it returns. A call that returns in time
// passes its error through.
func TestTxnCallWedged(t *testing.T) {
	tx := &txn{timeout: 50 * time.Millisecond, wedgeGrace: 50 * time.Millisecond, log: slog.New(slog.DiscardHandler)}

	boom := errors.New("boom")
	require.ErrorIs(t, tx.call(context.Background(), "quick", func(context.Context) error { return boom }), boom)
	assert.Nil(t, tx.wedged)

	release := make(chan struct{})
	start := time.Now()
	err := tx.call(context.Background(), "send offsets to transaction", func(ctx context.Context) error {
		_, ok := ctx.Deadline()
		assert.True(t, ok, "the call is given the transaction timeout as its deadline")
		<-release // ignores its deadline, as librdkafka #5456 does
		return nil
	})
	var te *produce.TxnError
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Fatal && te.Fenced, "a wedged call is handled as a fenced producer: %v", err)
	assert.ErrorIs(t, err, errWedged)
	assert.Less(t, time.Since(start), 5*time.Second)
	require.NotNil(t, tx.wedged)
	select {
	case <-tx.wedged:
		t.Fatal("the wedged call is still running")
	default:
	}
	close(release)
	select {
	case <-tx.wedged:
	case <-time.After(5 * time.Second):
		t.Fatal("the wedged call's return was not signalled")
	}
}
