package samsatest_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/testwait"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

var out = processor.NewOutput("out", codec.String(), codec.Int64())

// heldFirst starts a broker with topics in and out (one partition each) and produces to
// in the key "held" (value 0), 300 records over 30 other keys, then more.
func heldFirst(t *testing.T, more ...samsatest.KV[string, int64]) (*samsatest.Broker, []samsatest.KV[string, int64]) {
	b := samsatest.NewBroker(t, samsatest.Topic{Name: "in", Partitions: 1}, samsatest.Topic{Name: "out", Partitions: 1})
	recs := []samsatest.KV[string, int64]{{Key: "held", Value: 0}}
	for i := range 300 {
		recs = append(recs, samsatest.KV[string, int64]{Key: fmt.Sprintf("key-%d", i%30), Value: int64(i)})
	}
	recs = append(recs, more...)
	samsatest.Produce(t, b.Addr(), processor.NewOutput("in", codec.String(), codec.Int64()), recs...)
	return b, recs
}

// With Concurrency, a key whose handler does not return holds its own records and its
// partition's commit, while the partition's other keys are handled and their outputs
// produced.
func TestConcurrencyHeldKeyLetsOthersMove(t *testing.T) {
	b, recs := heldFirst(t, samsatest.KV[string, int64]{Key: "held", Value: 1})

	release := make(chan struct{})
	h := processor.HandlerFunc[string, int64](func(ctx context.Context, batch *processor.Batch[string, int64]) error {
		for _, r := range batch.Records {
			if r.Key == "held" && r.Value == 0 {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if err := out.Send(batch, r.Key, r.Value); err != nil {
				return err
			}
		}
		return nil
	})
	cfg := b.ProcessorConfig("g")
	cfg.Concurrency = 8
	cfg.BatchSize = 50
	p, err := processor.New(cfg, []processor.Input[string, int64]{{Topic: "in", Key: codec.String(), Value: codec.Int64()}}, h)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-errc)
	}()

	read := func() []processor.Record[string, int64] {
		got, err := samsatest.ReadAll(t.Context(), b.Addr(), "out", codec.String(), codec.Int64())
		require.NoError(t, err)
		return got
	}
	testwait.For(t, 30*time.Second, "the other keys' 300 outputs", func() bool { return len(read()) >= 300 })
	for _, r := range read() {
		assert.NotEqual(t, "held", r.Key, "nothing of the held key went out")
	}
	// Batch size 50, up to 8 batches (MaxInFlightBatches) in flight: the held record is the
	// first, so no offset of the partition is committed while it is held.
	assert.Empty(t, b.Committed("g", "in"), "the commit does not pass the held record")

	close(release)
	testwait.For(t, 30*time.Second, "every record committed", func() bool { return b.Committed("g", "in")[0] == int64(len(recs)) })
	got := read()
	require.Len(t, got, len(recs))
	var held []int64
	for _, r := range got {
		if r.Key == "held" {
			held = append(held, r.Value)
		}
	}
	assert.Equal(t, []int64{0, 1}, held, "the held key's records, in order")
}

// A key held past StopTimeout at shutdown leaves its batch, and the batches behind it,
// uncommitted; what was done behind it is recorded in the commit, and the next instance
// handles only the held record again.
func TestConcurrencyDoneRecordsNotRedoneAfterRestart(t *testing.T) {
	b, recs := heldFirst(t)

	var mu sync.Mutex
	calls := map[string]int{} // per instance, calls for keys other than held
	start := func(name string, hold bool) func() error {
		h := processor.HandlerFunc[string, int64](func(ctx context.Context, batch *processor.Batch[string, int64]) error {
			for _, r := range batch.Records {
				if r.Key == "held" && hold {
					<-ctx.Done() // past StopTimeout: the partition's work is abandoned
					return ctx.Err()
				}
				if r.Key != "held" {
					mu.Lock()
					calls[name]++
					mu.Unlock()
				}
				if err := out.Send(batch, r.Key, r.Value); err != nil {
					return err
				}
			}
			return nil
		})
		cfg := b.ProcessorConfig("g")
		cfg.Concurrency, cfg.BatchSize, cfg.StopTimeout = 8, 50, time.Second
		p, err := processor.New(cfg, []processor.Input[string, int64]{{Topic: "in", Key: codec.String(), Value: codec.Int64()}}, h)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- p.Run(ctx) }()
		return func() error { cancel(); return <-errc }
	}
	read := func() []processor.Record[string, int64] {
		got, err := samsatest.ReadAll(t.Context(), b.Addr(), "out", codec.String(), codec.Int64())
		require.NoError(t, err)
		return got
	}

	stop := start("first", true)
	testwait.For(t, 30*time.Second, "the other keys' 300 outputs", func() bool { return len(read()) >= 300 })
	require.NoError(t, stop(), "a held key past StopTimeout is left to the next owner, not an error")
	assert.Equal(t, map[int32]int64{0: 0}, b.Committed("g", "in"), "the commit stays at the held record")

	stop = start("second", false)
	testwait.For(t, 30*time.Second, "every record committed", func() bool { return b.Committed("g", "in")[0] == int64(len(recs)) })
	require.NoError(t, stop())
	mu.Lock()
	assert.Equal(t, 300, calls["first"])
	assert.Zero(t, calls["second"], "the records done behind the held one are not handled again")
	mu.Unlock()
	got := read()
	assert.Equal(t, len(recs), len(got), "every record's output once")
}
