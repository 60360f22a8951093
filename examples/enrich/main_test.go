package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/samsatest"
	"github.com/samsa-go/samsa/state"
)

// TestEnrich runs the example as `go run ./examples/enrich` does: on the in-process
// broker when KAFKA_BROKERS is unset, else on that cluster (make test sets it).
func TestEnrich(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, run(ctx))
}

// The join's outputs match the reference join across a rebalance (a second instance
// joins, then the first leaves) and a restart of the products View in between.
func TestEnrichAcrossRebalanceAndViewRestart(t *testing.T) {
	if os.Getenv("KAFKA_BROKERS") != "" {
		t.Setenv("KAFKA_BROKERS", "") // the kit's broker scripts the instances' rebalances
	}
	var topics []samsatest.Topic
	for _, tp := range exampleTopics {
		topics = append(topics, samsatest.Topic{Name: tp.Name, Partitions: int32(tp.Partitions)})
	}
	b := samsatest.NewBroker(t, topics...)
	ctx := t.Context()
	d := exampleData(2000)
	require.NoError(t, produce(ctx, b.Addr(), products, d.products))
	require.NoError(t, produce(ctx, b.Addr(), customers, d.customers))

	e := &enricher{customers: state.NewMemoryTable[string, Customer]()}
	v, stopView, err := startProducts(b.Addr())
	require.NoError(t, err)
	e.products.Store(v)
	const group = "enrich"
	drv := samsatest.NewDriver(t, func(int) (samsatest.Runner, error) { return e.newProcessor(b.Addr(), group) })
	balanced := func(members int) {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		require.NoError(t, b.WaitBalanced(wctx, group, "orders", members))
	}

	first := drv.Add()
	balanced(1)
	require.NoError(t, d.waitCustomers(ctx, e.customers))
	half := len(d.orders) / 2
	require.NoError(t, produce(ctx, b.Addr(), orders, d.orders[:half]))
	drv.Add()
	balanced(2)

	// The View restarts: lookups wait for the new one to restore.
	require.NoError(t, stopView())
	v, stopView, err = startProducts(b.Addr())
	require.NoError(t, err)
	e.products.Store(v)
	defer func() { assert.NoError(t, stopView()) }()

	require.NoError(t, produce(ctx, b.Addr(), orders, d.orders[half:]))
	require.NoError(t, drv.Remove(first, 30*time.Second))
	balanced(1)

	recs := readAllEnriched(t, b.Addr(), len(d.orders))
	want := d.expected()
	seen := map[string]int{}
	for _, r := range recs {
		seen[r.Order]++
		assert.Equal(t, want[r.Order], r, "order %s", r.Order)
	}
	assert.Len(t, seen, len(want), "every order enriched")
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	t.Logf("%d orders, %d outputs (%d again after a hand-over)", len(want), len(recs), dups)
	require.NoError(t, drv.Stop())
}

// readAllEnriched waits until orders-enriched holds n distinct orders and returns all
// its records.
func readAllEnriched(t *testing.T, brokers string, n int) []Enriched {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		recs, err := samsatest.ReadAll(t.Context(), brokers, enriched.Topic(), codec.String(), codec.JSON[Enriched]())
		require.NoError(t, err)
		out := make([]Enriched, len(recs))
		distinct := map[string]bool{}
		for i, r := range recs {
			out[i] = r.Value
			distinct[r.Value.Order] = true
		}
		if len(distinct) >= n {
			return out
		}
		require.True(t, time.Now().Before(deadline), fmt.Sprintf("%d of %d orders enriched within a minute", len(distinct), n))
		time.Sleep(100 * time.Millisecond)
	}
}
