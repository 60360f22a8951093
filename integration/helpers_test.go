package integration

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/state"
)

func TestMain(m *testing.M) { os.Exit(stack.RunTests(m)) }

func key(i int) string { return fmt.Sprintf("k%06d", i) }

// foldKeys is a checkpointed handler's read-modify-write: it reads the values of the
// batch's keys from tbl, folds each record in order into its key's value with f, and
// applies the new values with the batch's next offsets.
func foldKeys(ctx context.Context, tbl *state.Table[string, int64], b *processor.Batch[string, string], f func(r processor.Record[string, string], v *int64) error) error {
	var keys []string
	index := map[string]int{}
	for _, r := range b.Records {
		if _, ok := index[r.Key]; !ok {
			index[r.Key] = len(keys)
			keys = append(keys, r.Key)
		}
	}
	vals, _, err := tbl.Partition(b.Partition).GetMany(ctx, keys)
	if err != nil {
		return err
	}
	for _, r := range b.Records {
		if err := f(r, &vals[index[r.Key]]); err != nil {
			return err
		}
	}
	puts := make([]state.Entry[string, int64], len(keys))
	for i, k := range keys {
		puts[i] = state.Entry[string, int64]{Key: k, Value: vals[i]}
	}
	return tbl.Apply(ctx, b.Partition, puts, nil, b.NextOffsets())
}

// copyHandler writes every record to out as it is.
func copyHandler[K, V any](out processor.Output[K, V]) processor.HandlerFunc[K, V] {
	return func(_ context.Context, b *processor.Batch[K, V]) error { return sendAll(b, out) }
}

// sendAll sends every record of b to out, key and value as they are.
func sendAll[K, V any](b *processor.Batch[K, V], out processor.Output[K, V]) error {
	for _, r := range b.Records {
		if err := out.Send(b, r.Key, r.Value); err != nil {
			return err
		}
	}
	return nil
}

// bgRun is a Run (a processor's, say) on its own goroutine.
type bgRun struct {
	name    string
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // Run's result, valid after done
	once    sync.Once
	stopErr error
}

// goRun starts run on its own goroutine with a context that stop cancels; the test's end
// stops it too.
func goRun(t testing.TB, name string, run func(context.Context) error) *bgRun {
	ctx, cancel := context.WithCancel(context.Background())
	r := &bgRun{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = run(ctx)
	}()
	t.Cleanup(func() { r.stop() })
	return r
}

// alive fails (an error) once Run has returned.
func (r *bgRun) alive() error {
	select {
	case <-r.done:
		return fmt.Errorf("%s: Run returned early: %v", r.name, r.err)
	default:
		return nil
	}
}

// stop cancels Run's context and returns Run's error, waiting up to a minute; once.
func (r *bgRun) stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case <-r.done:
			r.stopErr = r.err
		case <-time.After(time.Minute):
			r.stopErr = fmt.Errorf("%s: Run did not return within 1m of cancel", r.name)
		}
	})
	return r.stopErr
}

// runUntil runs run until reached (polled every poll) reports true, then cancels it, or
// until run returns by itself or timeout passes; it returns run's error and how long
// it ran until reached or its return.
func runUntil(run func(context.Context) error, timeout, poll time.Duration, reached func() bool) (error, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	for {
		select {
		case err := <-done:
			return err, time.Since(start)
		case <-time.After(poll):
		}
		if reached() {
			took := time.Since(start)
			cancel()
			return <-done, took
		}
	}
}

// progressReached reports whether group's committed offsets on topic (partitions 0
// and 1) add up to until.
func progressReached(t *testing.T, brokers, group, topic string, until int64) func() bool {
	return func() bool {
		c := harness.CommittedOffsets(t, brokers, group, topic, 2)
		return c[0]+c[1] >= until
	}
}
