package processor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

// A handler that never returns, even once its context is cancelled: shutdown pays the
// bound (StopTimeout + 5 s) once, Run fails naming the stuck partition, and Close
// returns only after Run did.
func TestShutdownWithStuckHandlerPaysTheBoundOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a shutdown bound (about 7 s)")
	}
	b := samsatest.NewBroker(t, samsatest.Topic{Name: "in", Partitions: 1})
	samsatest.Produce(t, b.Addr(), processor.NewOutput("in", codec.String(), codec.String()), samsatest.KV[string, string]{Key: "k", Value: "v"})
	entered := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	const drain = 2 * time.Second
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: b.Addr(), StopTimeout: drain}, Group: "stuck"},
		[]processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
		processor.HandlerFunc[string, string](func(ctx context.Context, bt *processor.Batch[string, string]) error {
			close(entered)
			<-release // ignores ctx
			return nil
		}))
	require.NoError(t, err)
	done := make(chan error, 1)
	var returned time.Time
	go func() {
		err := p.Run(context.Background())
		returned = time.Now()
		done <- err
	}()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler was never called")
	}
	start := time.Now()
	closeErr := p.Close()
	closed := time.Now()
	var runErr error
	select {
	case runErr = <-done:
	case <-time.After(5 * time.Second): // Close returned once Run's body ended: Run returns at once
		t.Fatal("Run did not return after Close did")
	}
	took := returned.Sub(start)
	t.Logf("Run returned %s after Close was called (bound %s)", took.Round(time.Millisecond), drain+5*time.Second)
	require.Error(t, runErr)
	assert.ErrorContains(t, runErr, "slots [0]", "the error names the stuck partition")
	assert.NoError(t, closeErr, "Close waited for Run instead of giving up")
	// Close waits for Run's body to end: it did not return before Run had waited for the
	// handler (and Run's return followed Close's within the wait above).
	assert.GreaterOrEqual(t, closed.Sub(start), drain, "Close returned before Run waited StopTimeout for the handler")
	// Paid once: about 7 s; twice would be 14 s.
	assert.Less(t, took, 2*(drain+5*time.Second)-3*time.Second, "the shutdown bound was paid more than once")
	assert.Less(t, closed.Sub(start), 2*(drain+5*time.Second)-3*time.Second, "Close paid the shutdown bound more than once")
	assert.GreaterOrEqual(t, took, drain, "Run waited for the handler at least StopTimeout")
}
