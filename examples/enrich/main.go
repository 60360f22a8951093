// Enrich: orders joined with their customer and their product.
//
//	go run ./examples/enrich
//
// Orders are keyed by customer id, in a topic co-partitioned with the customers topic:
// one processor reads both (processor.NewPartitionedJoin), each record typed as its topic
// decodes it, and keeps every customer it sees in a state table. Products are a small,
// compacted topic that every node reads whole into a view.View; the handler looks each
// order's product up there. Each order goes out once, with its customer's name and its
// product's name and price, to "orders-enriched".
//
// With nothing configured it runs on an in-process broker; set KAFKA_BROKERS to run it
// against a real cluster (docker compose up), and REDIS_ADDR to keep the customers in
// Redis instead of in memory.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/examples/internal/devkafka"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/processor/topics"
	"github.com/samsa-go/samsa/processor/view"
	"github.com/samsa-go/samsa/state"
)

type Order struct {
	ID       string `json:"id"`
	Product  string `json:"product"`
	Quantity int    `json:"quantity"`
}

type Customer struct {
	Name string `json:"name"`
}

type Product struct {
	Name  string `json:"name"`
	Cents int    `json:"cents"`
}

// Enriched is what goes out for every order.
type Enriched struct {
	Order    string `json:"order"`
	Customer string `json:"customer"` // empty: no record of the customer before the order
	Product  string `json:"product"`  // empty: the product is not in the products topic
	Cents    int    `json:"cents"`    // quantity × the product's price
}

var (
	orders    = processor.NewOutput("orders", codec.String(), codec.JSON[Order]())
	customers = processor.NewOutput("customers", codec.String(), codec.JSON[Customer]())
	products  = processor.NewOutput("products", codec.String(), codec.JSON[Product]())
	enriched  = processor.NewOutput("orders-enriched", codec.String(), codec.JSON[Enriched]())
)

// partitions of orders and customers, which are co-partitioned.
const partitions = 4

var exampleTopics = []devkafka.Topic{{Name: "orders", Partitions: partitions}, {Name: "customers", Partitions: partitions},
	{Name: "products", Partitions: 2}, {Name: "orders-enriched", Partitions: partitions}}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

// enricher joins orders with customers (co-partitioned inputs) and products (a View).
type enricher struct {
	customers *state.Table[string, Customer]
	// products is the View lookups go to; a restarted View replaces it, and lookups wait
	// until the new one has restored.
	products atomic.Pointer[view.View[string, Product]]
}

// newProcessor returns the enrichment processor of group.
func (e *enricher) newProcessor(brokers, group string) (*processor.Processor[string, processor.Either[Order, Customer]], error) {
	return processor.NewPartitionedJoin(
		processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: group, Outputs: []string{enriched.Topic()}, BatchWait: 20 * time.Millisecond},
		processor.Input[string, Order]{Topic: orders.Topic(), Key: codec.String(), Value: codec.JSON[Order]()},
		processor.Input[string, Customer]{Topic: customers.Topic(), Key: codec.String(), Value: codec.JSON[Customer]()},
		func(partition int32) processor.Handler[string, processor.Either[Order, Customer]] {
			return processor.HandlerFunc[string, processor.Either[Order, Customer]](func(ctx context.Context, b *processor.Batch[string, processor.Either[Order, Customer]]) error {
				return e.handle(ctx, b)
			})
		})
}

func (e *enricher) handle(ctx context.Context, b *processor.Batch[string, processor.Either[Order, Customer]]) error {
	known := e.customers.Partition(b.Partition)
	for _, r := range b.Records {
		if c, ok := r.Value.Right(); ok {
			// A customer: the batch is in timestamp order across both topics, so later
			// orders of the batch see it.
			if r.Tombstone {
				if err := known.Delete(ctx, r.Key); err != nil {
					return err
				}
				continue
			}
			if err := known.Put(ctx, r.Key, c); err != nil {
				return err
			}
			continue
		}
		o, _ := r.Value.Left()
		if r.Tombstone {
			continue // an order deleted: nothing to enrich
		}
		c, _, err := known.Get(ctx, r.Key)
		if err != nil {
			return err
		}
		v := e.products.Load()
		if err := v.WaitReady(ctx); err != nil {
			return err
		}
		p, _, err := v.Get(o.Product)
		if err != nil {
			return err
		}
		out := Enriched{Order: o.ID, Customer: c.Name, Product: p.Name, Cents: o.Quantity * p.Cents}
		if err := enriched.Send(b, r.Key, out); err != nil {
			return err
		}
	}
	return nil
}

// startProducts starts a View of the products topic and returns it with a function
// that stops it and returns what its Run returned.
func startProducts(brokers string) (*view.View[string, Product], func() error, error) {
	v, err := view.New(view.Config{Brokers: brokers}, products.Topic(), codec.String(), codec.JSON[Product]())
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- v.Run(ctx) }()
	return v, func() error { cancel(); return <-errc }, nil
}

// data is the example's input: products, customers, then orders.
type data struct {
	products  []topics.Record[string, Product]
	customers []topics.Record[string, Customer]
	orders    []topics.Record[string, Order]
}

func exampleData(nOrders int) data {
	var d data
	for i := range 20 {
		d.products = append(d.products, topics.Record[string, Product]{Key: fmt.Sprintf("p%02d", i), Value: Product{Name: fmt.Sprintf("product %d", i), Cents: 100 + 25*i}})
	}
	for i := range 50 {
		d.customers = append(d.customers, topics.Record[string, Customer]{Key: fmt.Sprintf("c%02d", i), Value: Customer{Name: fmt.Sprintf("customer %d", i)}})
	}
	for i := range nOrders {
		d.orders = append(d.orders, topics.Record[string, Order]{Key: fmt.Sprintf("c%02d", i%55), // c50..c54 are unknown
			Value: Order{ID: fmt.Sprintf("o%05d", i), Product: fmt.Sprintf("p%02d", i%22), Quantity: 1 + i%3}}) // p20, p21 too
	}
	return d
}

// produce writes recs to out and waits for their acknowledgements.
func produce[V any](ctx context.Context, brokers string, out processor.Output[string, V], recs []topics.Record[string, V]) error {
	p, err := topics.NewProducer(topics.ProducerConfig{Brokers: brokers}, out)
	if err != nil {
		return err
	}
	defer p.Close()
	return p.SendMany(ctx, recs)
}

// expected is the reference join, computed from the input alone: every order with the
// customer and product produced before it.
func (d data) expected() map[string]Enriched {
	cust := map[string]string{}
	for _, c := range d.customers {
		cust[c.Key] = c.Value.Name
	}
	prod := map[string]Product{}
	for _, p := range d.products {
		prod[p.Key] = p.Value
	}
	want := map[string]Enriched{}
	for _, o := range d.orders {
		p := prod[o.Value.Product]
		want[o.Value.ID] = Enriched{Order: o.Value.ID, Customer: cust[o.Key], Product: p.Name, Cents: o.Value.Quantity * p.Cents}
	}
	return want
}

// customerTable is the customers' state: in Redis at $REDIS_ADDR, else in memory.
func customerTable() (*state.Table[string, Customer], func(), error) {
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		return state.NewMemoryTable[string, Customer](), func() {}, nil
	}
	client := redis.NewClient(&redis.Options{Addr: addr})
	t, err := state.NewTable(client, fmt.Sprintf("enrich-%d", time.Now().UnixNano()), codec.String(), codec.JSON[Customer]())
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return t, func() { client.Close() }, nil
}

func run(ctx context.Context) error {
	brokers, release, err := devkafka.Brokers(ctx, exampleTopics...)
	if err != nil {
		return err
	}
	defer release()
	fmt.Printf("brokers: %s\n", brokers)
	d := exampleData(1000)
	if err := errors.Join(produce(ctx, brokers, products, d.products), produce(ctx, brokers, customers, d.customers)); err != nil {
		return err
	}
	table, closeTable, err := customerTable()
	if err != nil {
		return err
	}
	defer closeTable()
	v, stopView, err := startProducts(brokers)
	if err != nil {
		return err
	}
	e := &enricher{customers: table}
	e.products.Store(v)
	p, err := e.newProcessor(brokers, fmt.Sprintf("enrich-%d", time.Now().UnixNano()))
	if err != nil {
		return errors.Join(err, stopView())
	}
	runCtx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx) }()

	// The orders come once the customers are known. Within a batch, records of the two
	// topics are in timestamp order; across batches, each topic's records are handled as
	// they are fetched, so an order fetched before its customer would miss it.
	err = d.waitCustomers(ctx, table)
	if err == nil {
		err = produce(ctx, brokers, orders, d.orders)
	}
	var got map[string]Enriched
	if err == nil {
		got, err = readEnriched(ctx, brokers, len(d.orders))
	}
	cancel()
	err = errors.Join(err, <-runErr, stopView())
	if err != nil {
		return err
	}
	want := d.expected()
	for id, w := range want {
		if got[id] != w {
			return fmt.Errorf("order %s: got %+v, want %+v", id, got[id], w)
		}
	}
	fmt.Printf("done: %d orders enriched, e.g. %+v\n", len(got), got["o00007"])
	return nil
}

// waitCustomers waits (at most a minute) until table holds every customer of d.
func (d data) waitCustomers(ctx context.Context, table *state.Table[string, Customer]) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, c := range d.customers {
		part := table.Partition(state.PartitionOf([]byte(c.Key), partitions)) // where the customers topic has it
		for {
			_, found, err := part.Get(ctx, c.Key)
			if err != nil {
				return err
			}
			if found {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("customer %s not in the table: %w", c.Key, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// readEnriched reads orders-enriched until it holds n distinct orders (at most a
// minute), and returns the last output of each.
func readEnriched(ctx context.Context, brokers string, n int) (map[string]Enriched, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		recs, err := devkafka.ReadAll(ctx, brokers, enriched.Topic(), codec.String(), codec.JSON[Enriched]())
		if err != nil {
			return nil, err
		}
		got := map[string]Enriched{}
		for _, r := range recs {
			got[r.Value.Order] = r.Value
		}
		if len(got) >= n {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%d of %d orders enriched: %w", len(got), n, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
