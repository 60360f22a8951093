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
// the overrunning call is remembered until it returns; the error names the transactional
// id. A call that returns in time passes its error through.
func TestTxnCallWedged(t *testing.T) {
	// The producer is never used: nothing listens at its bootstrap address.
	prod, err := produce.New(produce.Config{Brokers: "127.0.0.1:1", TransactionalID: "g-wedge"})
	require.NoError(t, err)
	defer prod.Close(0)
	tx := &txn{prod: prod, timeout: 50 * time.Millisecond, wedgeGrace: 50 * time.Millisecond, log: slog.New(slog.DiscardHandler)}

	boom := errors.New("boom")
	require.ErrorIs(t, tx.call(context.Background(), "quick", func(context.Context) error { return boom }), boom)
	assert.Nil(t, tx.wedged)

	release := make(chan struct{})
	start := time.Now()
	err = tx.call(context.Background(), "send offsets to transaction", func(ctx context.Context) error {
		_, ok := ctx.Deadline()
		assert.True(t, ok, "the call is given the transaction timeout as its deadline")
		<-release // ignores its deadline, as librdkafka #5456 does
		return nil
	})
	var te *produce.TxnError
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Fatal && te.Fenced, "a wedged call is handled as a fenced producer: %v", err)
	assert.ErrorIs(t, err, errWedged)
	assert.ErrorContains(t, err, `send offsets to transaction of transactional id "g-wedge"`, "the error names the wedged producer's transactional id")
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

// TestTxnUntilReached: a retriable failure to abort (the coordinator out of reach, as
// during a network partition longer than the session timeout) is retried past the
// caller's attempts and past the caller's deadline while Run's context lives, and the
// call succeeds once the coordinator answers; when Run is ending, the caller's attempts
// bound it; a non-retriable error returns at once.
func TestTxnUntilReached(t *testing.T) {
	timedOut := &produce.TxnError{Op: "abort transaction", Err: errors.New("Timed out waiting for operation to finish"), Retriable: true}
	failing := func(n int, calls *int) func(context.Context) error {
		return func(context.Context) error {
			*calls++
			if *calls <= n {
				return timedOut
			}
			return nil
		}
	}

	t.Run("Run alive: retried until reached", func(t *testing.T) {
		life, cancel := context.WithCancel(context.Background())
		defer cancel()
		tx := &txn{timeout: time.Second, wedgeGrace: time.Second, log: slog.New(slog.DiscardHandler), life: life}
		caller, ccancel := context.WithTimeout(context.Background(), 100*time.Millisecond) // as the revoke hook's bound
		defer ccancel()
		var calls int
		require.NoError(t, tx.untilReached(caller, "abort transaction", 4, failing(8, &calls)))
		assert.Equal(t, 9, calls, "eight timeouts, then the coordinator answered")
	})

	t.Run("Run ending: the caller's attempts bound it", func(t *testing.T) {
		ended, cancel := context.WithCancel(context.Background())
		cancel()
		tx := &txn{timeout: time.Second, wedgeGrace: time.Second, log: slog.New(slog.DiscardHandler), life: ended}
		var calls int
		err := tx.untilReached(context.Background(), "abort transaction", 4, failing(100, &calls))
		require.ErrorIs(t, err, timedOut)
		assert.Equal(t, 4, calls)
	})

	t.Run("Run cancelled while retrying", func(t *testing.T) {
		life, cancel := context.WithCancel(context.Background())
		tx := &txn{timeout: time.Second, wedgeGrace: time.Second, log: slog.New(slog.DiscardHandler), life: life}
		var calls int
		time.AfterFunc(300*time.Millisecond, cancel)
		start := time.Now()
		err := tx.untilReached(context.Background(), "abort transaction", 1, failing(1<<30, &calls))
		require.ErrorIs(t, err, timedOut)
		assert.Less(t, time.Since(start), 5*time.Second)
	})

	t.Run("not retriable", func(t *testing.T) {
		tx := &txn{timeout: time.Second, wedgeGrace: time.Second, log: slog.New(slog.DiscardHandler), life: context.Background()}
		fenced := &produce.TxnError{Op: "abort transaction", Err: errors.New("fenced"), Fatal: true, Fenced: true}
		var calls int
		err := tx.untilReached(context.Background(), "abort transaction", 4, func(context.Context) error { calls++; return fenced })
		require.ErrorIs(t, err, fenced)
		assert.Equal(t, 1, calls)
	})
}
