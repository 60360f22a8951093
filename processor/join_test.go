package processor_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
	"github.com/samsa-go/samsa/state"
)

type joinOrder struct {
	ID     int `json:"id"`
	Amount int `json:"amount"`
}

type joinCustomer struct {
	Name string `json:"name"`
}

// Two co-partitioned inputs of different value types, each typed in the handler; a
// customer's tombstone arrives on the right side.
func TestJoinTypedInputs(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "orders", Partitions: 2}, embedded.Topic{Name: "customers", Partitions: 2},
		embedded.Topic{Name: "enriched", Partitions: 2})
	customersOut := processor.NewOutput("customers", codec.String(), codec.JSON[joinCustomer]())
	ordersOut := processor.NewOutput("orders", codec.String(), codec.JSON[joinOrder]())
	var customers []samsatest.KV[string, joinCustomer]
	for c := range 10 {
		customers = append(customers, samsatest.KV[string, joinCustomer]{Key: fmt.Sprintf("c%d", c), Value: joinCustomer{Name: fmt.Sprintf("name-%d", c)}})
	}
	samsatest.Produce(t, brokers, customersOut, customers...)
	var orders []samsatest.KV[string, joinOrder]
	for i := range 100 {
		orders = append(orders, samsatest.KV[string, joinOrder]{Key: fmt.Sprintf("c%d", i%10), Value: joinOrder{ID: i, Amount: i * 10}})
	}
	samsatest.Produce(t, brokers, ordersOut, orders...)
	produceRaw(t, brokers, "customers", state.PartitionOf([]byte("c3"), 2), []byte("c3"), nil) // where the Output put c3

	enriched := processor.NewOutput("enriched", codec.String(), codec.String())
	var rightTombstones, leftTombstones, neither atomic.Int32
	p, err := processor.NewPartitionedJoin(
		processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "join", BatchWait: 5 * time.Millisecond},
		processor.Input[string, joinOrder]{Topic: "orders", Key: codec.String(), Value: codec.JSON[joinOrder]()},
		processor.Input[string, joinCustomer]{Topic: "customers", Key: codec.String(), Value: codec.JSON[joinCustomer]()},
		func(int32) processor.Handler[string, processor.Either[joinOrder, joinCustomer]] {
			known := map[string]string{}
			return processor.HandlerFunc[string, processor.Either[joinOrder, joinCustomer]](func(ctx context.Context, b *processor.Batch[string, processor.Either[joinOrder, joinCustomer]]) error {
				for _, r := range b.Records {
					if c, ok := r.Value.Right(); ok {
						if r.Tombstone {
							rightTombstones.Add(1)
							delete(known, r.Key)
							continue
						}
						known[r.Key] = c.Name
						continue
					}
					o, ok := r.Value.Left()
					if !ok {
						neither.Add(1)
					}
					if r.Tombstone {
						leftTombstones.Add(1)
					}
					if err := enriched.Send(b, r.Key, fmt.Sprintf("%d:%d:%s", o.ID, o.Amount, known[r.Key])); err != nil {
						return err
					}
				}
				return nil
			})
		})
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool {
		o, c := committed(t, brokers, "join", "orders", 2), committed(t, brokers, "join", "customers", 2)
		return o[0]+o[1] == 100 && c[0]+c[1] == 11
	}))
	got, err := samsatest.ReadAll(t.Context(), brokers, "enriched", codec.String(), codec.String())
	require.NoError(t, err)
	want := map[string]bool{}
	for _, o := range orders {
		want[fmt.Sprintf("%s=%d:%d:name-%s", o.Key, o.Value.ID, o.Value.Amount, o.Key[1:])] = true
	}
	have := map[string]bool{}
	for _, r := range got {
		have[r.Key+"="+r.Value] = true
	}
	assert.Equal(t, want, have, "every order enriched with its customer, who was produced before it")
	assert.EqualValues(t, 1, rightTombstones.Load(), "the customer's tombstone is on the right side")
	assert.Zero(t, leftTombstones.Load())
	assert.Zero(t, neither.Load())
}

func TestJoinConfigErrors(t *testing.T) {
	_, err := processor.NewJoin(processor.Config{Membership: processor.Membership{Brokers: "x:1", Protocol: processor.Cooperative}, Group: "g"},
		processor.Input[string, joinOrder]{Topic: "orders", Key: codec.String()},
		processor.Input[string, joinCustomer]{Topic: "orders", Key: codec.String(), Value: codec.JSON[joinCustomer]()},
		processor.HandlerFunc[string, processor.Either[joinOrder, joinCustomer]](func(context.Context, *processor.Batch[string, processor.Either[joinOrder, joinCustomer]]) error {
			return nil
		}))
	require.Error(t, err)
	for _, want := range []string{`inputs[0] ("orders"): Key and Value decoders are required`, `topic "orders" is listed twice`, "cooperative"} {
		assert.Contains(t, err.Error(), want)
	}
}
