package distributed_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/distributed"
)

// Supervise alone, no broker: the supervised process is called directly.

func TestSuperviseBackoffEndsAtOnceOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	failed := make(chan struct{}, 1)
	p := distributed.Supervise(func(context.Context) error {
		select {
		case failed <- struct{}{}:
		default:
		}
		return errors.New("down")
	}, distributed.SuperviseOptions{Backoff: distributed.Backoff{Initial: time.Hour, Max: time.Hour}})
	done := make(chan error, 1)
	go func() { done <- p(ctx) }()
	<-failed
	time.Sleep(20 * time.Millisecond) // checks that nothing happens: Supervise waits in the hour-long backoff
	require.Empty(t, done, "Supervise returned during its backoff")
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err, "a cancelled context ends supervision cleanly")
	case <-time.After(5 * time.Second):
		t.Fatal("Supervise did not return when its context was cancelled during a backoff")
	}
}

func TestSupervisedPanicIsAnErrorWithItsStack(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart int
		panics  []any
	}{
		{name: "string panics", restart: 2, panics: []any{"kaput", "kaput"}},
		{name: "error panic", restart: 1, panics: []any{errors.New("bad state")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []error
			runs := 0
			p := distributed.Supervise(func(context.Context) error {
				mu.Lock()
				defer mu.Unlock()
				runs++
				if runs <= len(tc.panics) {
					panic(tc.panics[runs-1])
				}
				return nil
			}, distributed.SuperviseOptions{Backoff: distributed.Backoff{Initial: time.Millisecond, Max: time.Millisecond},
				OnRestart: func(_ int, err error) { mu.Lock(); seen = append(seen, err); mu.Unlock() }})
			require.NoError(t, p(context.Background()), "the run after the panics returns nil: done")
			require.Len(t, seen, tc.restart)
			for _, err := range seen {
				assert.ErrorIs(t, err, distributed.ErrPanic)
				assert.Contains(t, err.Error(), "process panicked: ")
				assert.Contains(t, err.Error(), "supervise_test.go", "the stack is in the error text")
			}
		})
	}
}

func TestSuperviseGivesUpWithTheLastError(t *testing.T) {
	boom := errors.New("boom")
	runs := 0
	p := distributed.Supervise(func(context.Context) error { runs++; return boom },
		distributed.SuperviseOptions{Backoff: distributed.Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond}, MaxRestarts: 4})
	err := p(context.Background())
	assert.ErrorIs(t, err, boom)
	assert.ErrorContains(t, err, "gave up after 4 restarts: boom")
	assert.Equal(t, 5, runs)
}
