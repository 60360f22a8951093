// Events: KaufmannEx's model on samsa. Events with a meta envelope (name, id, emitted_at,
// correlation id) share one topic, Avro-encoded against a schema registry; each event
// name has its own schema (subject = event name) and its own typed handler; a handler
// that fails answers with an error event "event.error.<name>" carrying the original
// event and the error; a record that is not an event goes to the dead-letter topic.
//
//	go run ./examples/events                          # in-process Kafka and registry
//	go run ./examples/events/migrate-schemas -dir examples/events/schemas
//
// Set KAFKA_BROKERS and SCHEMA_REGISTRY_URL (docker compose up) to run it against a real
// cluster and registry; without SCHEMA_REGISTRY_URL it uses an in-memory registry that
// only this process sees. It first registers the schemas of schemas/ (the release task
// migrate-schemas does the same), then produces orders: every order is placed, then
// shipped; every tenth shipment has no carrier, which its handler refuses, so an
// "event.error.order.shipped" event is emitted instead. One record that is not an event
// at all is dead-lettered.
package main

import (
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/codec/registry"
	"github.com/samsa-go/samsa/examples/events/internal/events"
	"github.com/samsa-go/samsa/examples/internal/devkafka"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/processor/topics"
)

//go:embed schemas
var schemaFiles embed.FS

// OrderPlaced is the payload of "order.placed".
type OrderPlaced struct {
	OrderID     string `avro:"order_id"`
	Customer    string `avro:"customer"`
	AmountCents int64  `avro:"amount_cents"`
}

// OrderShipped is the payload of "order.shipped".
type OrderShipped struct {
	OrderID string `avro:"order_id"`
	Carrier string `avro:"carrier"`
}

type config struct {
	Topic, DLQ, Group string
	Orders            int
	Registry          string // URL; "" means an in-memory registry
	Out               *log.Logger
}

// summary is what a run saw.
type summary struct {
	Placed, Shipped int                                 // events handled successfully
	ErrorEvents     []events.Event[events.ErrorPayload] // read back from the topic
	DeadLettered    int
}

func main() {
	cfg := config{Topic: "events", DLQ: "events.dlq", Group: "events-service", Registry: os.Getenv("SCHEMA_REGISTRY_URL"),
		Out: log.New(os.Stdout, "", log.Ltime)}
	flag.IntVar(&cfg.Orders, "orders", 20, "orders to place and ship")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	s, err := run(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	cfg.Out.Printf("done: %d placed, %d shipped, %d error events, %d dead-lettered", s.Placed, s.Shipped, len(s.ErrorEvents), s.DeadLettered)
}

// failing reports whether order i's shipment is one the handler refuses.
func failing(i int) bool { return i%10 == 9 }

func run(ctx context.Context, cfg config) (summary, error) {
	var sum summary
	brokers, release, err := devkafka.Brokers(ctx, devkafka.Topic{Name: cfg.Topic, Partitions: 4}, devkafka.Topic{Name: cfg.DLQ, Partitions: 1})
	if err != nil {
		return sum, err
	}
	defer release()
	url := cfg.Registry
	if url == "" {
		url = "mock://events"
		cfg.Out.Printf("SCHEMA_REGISTRY_URL not set: using an in-memory registry only this process sees")
	}
	client, err := registry.NewClient(registry.Config{URL: url})
	if err != nil {
		return sum, err
	}
	defer client.Close()

	// The release task: register the event schemas.
	dir, _ := fs.Sub(schemaFiles, "schemas")
	if _, err := events.Migrate(client, dir, false, logWriter{cfg.Out}); err != nil {
		return sum, err
	}

	// The service: one typed handler per event name.
	var mu sync.Mutex
	svc := events.NewService(client, cfg.Topic, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	err = errors.Join(
		events.Handle(svc, "order.placed", func(_ context.Context, e events.Event[OrderPlaced]) error {
			mu.Lock()
			defer mu.Unlock()
			sum.Placed++
			return nil
		}),
		events.Handle(svc, "order.shipped", func(_ context.Context, e events.Event[OrderShipped]) error {
			if e.Payload.Carrier == "" {
				return fmt.Errorf("order %s shipped without a carrier", e.Payload.OrderID)
			}
			mu.Lock()
			defer mu.Unlock()
			sum.Shipped++
			return nil
		}, events.WithErrorEvents()),
		svc.RegisterErrorSchemas(),
	)
	if err != nil {
		return sum, err
	}

	// The outside world: orders placed and shipped, and one record that is no event.
	if err := produce(ctx, client, brokers, cfg); err != nil {
		return sum, err
	}
	cfg.Out.Printf("produced %d orders (placed, then shipped) and one record that is not an event to %q", cfg.Orders, cfg.Topic)

	p, err := processor.New(
		processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: cfg.Group, BatchWait: 20 * time.Millisecond, ErrorPolicy: processor.Retry(2, processor.Backoff{Initial: 50 * time.Millisecond}, processor.DeadLetter(cfg.DLQ))},
		[]processor.Input[string, events.Incoming]{{Topic: cfg.Topic, Key: codec.String(), Value: svc.Decoder()}},
		svc.Handler(),
	)
	if err != nil {
		return sum, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx) }()

	// Read back the error events and the dead letters until all are there.
	wantErrors := 0
	for i := range cfg.Orders {
		if failing(i) {
			wantErrors++
		}
	}
	readCtx, cancelRead := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelRead()
	// The topic holds the events, and the error events the handlers answer with.
	seenErr := map[int64]bool{}
	for err == nil && len(sum.ErrorEvents) < wantErrors {
		var recs []processor.Record[string, []byte]
		if recs, err = devkafka.ReadAll(readCtx, brokers, cfg.Topic, codec.String(), codec.Bytes()); err != nil {
			break
		}
		for _, r := range recs {
			if name, nerr := svc.Name(r.Value); nerr != nil || name != events.ErrorPrefix+"order.shipped" || seenErr[int64(r.Partition)<<40|r.Offset] {
				continue
			}
			seenErr[int64(r.Partition)<<40|r.Offset] = true
			e, derr := events.DecodeError(client, cfg.Topic, r.Value)
			if derr != nil {
				cfg.Out.Printf("undecodable error event: %v", derr)
				continue
			}
			cfg.Out.Printf("%s %s (correlation %s): %s", e.Meta.Name, e.Meta.ID, e.Meta.CorrelationID, e.Payload.Error)
			sum.ErrorEvents = append(sum.ErrorEvents, e)
		}
		err = pause(readCtx, len(sum.ErrorEvents) < wantErrors)
	}
	for err == nil && sum.DeadLettered == 0 {
		var recs []processor.Record[string, []byte]
		if recs, err = devkafka.ReadAll(readCtx, brokers, cfg.DLQ, codec.String(), codec.Bytes()); err != nil {
			break
		}
		for _, r := range recs {
			sum.DeadLettered++
			cfg.Out.Printf("dead-lettered: %d bytes that are not an event", len(r.Value))
		}
		err = pause(readCtx, sum.DeadLettered == 0)
	}
	// Everything else is handled before the last error event is produced... but not
	// necessarily committed: wait for the handlers' counts too.
	for err == nil && readCtx.Err() == nil {
		mu.Lock()
		done := sum.Placed >= cfg.Orders && sum.Shipped >= cfg.Orders-wantErrors
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if rerr := <-runErr; rerr != nil {
		return sum, rerr
	}
	if err == nil {
		err = readCtx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	return sum, err
}

func produce(ctx context.Context, client *registry.Client, brokers string, cfg config) error {
	placed, err := events.Encoder[OrderPlaced](client, cfg.Topic, "order.placed")
	if err != nil {
		return err
	}
	shipped, err := events.Encoder[OrderShipped](client, cfg.Topic, "order.shipped")
	if err != nil {
		return err
	}
	prod, err := topics.NewProducer(topics.ProducerConfig{Brokers: brokers}, processor.NewOutput(cfg.Topic, codec.String(), codec.Bytes()))
	if err != nil {
		return err
	}
	defer prod.Close()
	var recs []topics.Record[string, []byte]
	for i := range cfg.Orders {
		id := fmt.Sprintf("o-%04d", i)
		pe := events.Event[OrderPlaced]{Meta: events.Meta{ID: events.NewID()}, Payload: OrderPlaced{OrderID: id, Customer: fmt.Sprintf("c-%02d", i%7), AmountCents: int64(1000 + i)}}
		b, err := placed.Encode(pe)
		if err != nil {
			return err
		}
		recs = append(recs, topics.Record[string, []byte]{Key: id, Value: b})
		carrier := "dhl"
		if failing(i) {
			carrier = ""
		}
		b, err = shipped.Encode(events.Event[OrderShipped]{Meta: events.Meta{CorrelationID: pe.Meta.ID}, Payload: OrderShipped{OrderID: id, Carrier: carrier}})
		if err != nil {
			return err
		}
		recs = append(recs, topics.Record[string, []byte]{Key: id, Value: b})
	}
	recs = append(recs, topics.Record[string, []byte]{Key: "poison", Value: []byte(`{"not":"an event"}`)})
	return prod.SendMany(ctx, recs)
}

// pause waits a moment before the next read when more is wanted, or returns ctx's error.
func pause(ctx context.Context, more bool) error {
	if !more {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(100 * time.Millisecond):
		return nil
	}
}

// logWriter writes Migrate's lines through the example's logger.
type logWriter struct{ l *log.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Print(string(p))
	return len(p), nil
}
