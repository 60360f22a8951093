package samsatest_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

// The broker unreachable for 3 s while a processor copies a topic: it rides the outage
// out by itself; nothing is lost, order per key holds, and the group commits to the end.
func TestOutageRiddenOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a processor through a broker outage (about 10 s)")
	}
	const in, out, group = "orders", "orders.copy", "outage"
	b := samsatest.NewBroker(t, samsatest.Topic{Name: in, Partitions: 4}, samsatest.Topic{Name: out, Partitions: 4})
	copyOut := processor.NewOutput(out, codec.String(), codec.String())
	d := samsatest.NewDriver(t, func(int) (samsatest.Runner, error) {
		return processor.New(processor.Config{Membership: processor.Membership{Brokers: b.Addr()}, Group: group, CommitInterval: 100 * time.Millisecond},
			[]processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
			processor.HandlerFunc[string, string](func(ctx context.Context, bt *processor.Batch[string, string]) error {
				for _, r := range bt.Records {
					if err := copyOut.Send(bt, r.Key, r.Value); err != nil {
						return err
					}
				}
				return nil
			}), processor.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	})
	input := processor.NewOutput(in, codec.String(), codec.String())
	produce := func(from, n int) {
		recs := make([]samsatest.KV[string, string], n)
		for i := range recs {
			k := fmt.Sprintf("key-%d", (from+i)%13)
			recs[i] = samsatest.KV[string, string]{Key: k, Value: fmt.Sprintf("%s#%06d", k, from+i)}
		}
		samsatest.Produce(t, b.Addr(), input, recs...)
	}
	d.Add()
	produce(0, 1000)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	require.NoError(t, b.WaitBalanced(ctx, group, in, 1))
	b.Outage(3 * time.Second)
	time.Sleep(3500 * time.Millisecond) // the scenario: the next records are produced after the outage
	produce(1000, 1000)
	samsatest.RequireDelivered(t, samsatest.Delivery{Brokers: b.Addr(), Input: in, Output: out, Group: group}, 45*time.Second)
	require.NoError(t, d.Failed())
	require.NoError(t, d.Stop())
}
