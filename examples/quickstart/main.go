// Quickstart: numbers in, doubled numbers out, batches printed.
//
//	go run ./examples/quickstart
//
// With nothing configured it runs on an in-process broker; set KAFKA_BROKERS to run it
// against a real cluster (docker compose up). It produces 1..1000 to "numbers", runs a
// processor that doubles each number into "doubled", reads the results back and exits.
// OTEL_EXPORTER_OTLP_ENDPOINT sends its traces to Jaeger; METRICS_ADDR serves /metrics.
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/examples/internal/devkafka"
	"github.com/samsa-go/samsa/metrics"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/processor/topics"
)

const count = 1000

// doubled is the typed output topic: int64 keys and values (8 bytes big-endian, the
// encoding of Kafka's Java LongSerializer).
var doubled = processor.NewOutput("doubled", codec.Int64(), codec.Int64())

// numbers is the input topic, written from outside with a processor.Producer.
var numbers = processor.NewOutput("numbers", codec.Int64(), codec.Int64())

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	brokers, release, err := devkafka.Brokers(ctx, devkafka.Topic{Name: "numbers", Partitions: 4}, devkafka.Topic{Name: "doubled", Partitions: 4})
	if err != nil {
		return err
	}
	defer release()
	fmt.Printf("brokers: %s\n", brokers)
	obs, err := metrics.FromEnv(ctx, "quickstart", slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer obs.Close()

	// The outside world: 1..1000 into "numbers", partitioned by key as outputs are.
	prod, err := topics.NewProducer(topics.ProducerConfig{Brokers: brokers}, numbers)
	if err != nil {
		return err
	}
	defer prod.Close()
	recs := make([]topics.Record[int64, int64], count)
	for i := range recs {
		recs[i] = topics.Record[int64, int64]{Key: int64(i + 1), Value: int64(i + 1)}
	}
	if err := prod.SendMany(ctx, recs); err != nil {
		return err
	}

	// The processor: each partition's batches, in order; outputs are produced and
	// acknowledged before the input offsets are committed.
	var printMu sync.Mutex
	p, err := processor.New(
		processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: "quickstart", Outputs: []string{doubled.Topic()}, BatchSize: 100, BatchWait: 20 * time.Millisecond},
		[]processor.Input[int64, int64]{{Topic: "numbers", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
			printMu.Lock()
			fmt.Printf("partition %d: batch of %3d records, offsets %d..%d\n",
				b.Partition, len(b.Records), b.Records[0].Offset, b.Records[len(b.Records)-1].Offset)
			printMu.Unlock()
			for _, r := range b.Records {
				if err := doubled.Send(b, r.Key, 2*r.Value); err != nil {
					return err
				}
			}
			return nil
		}),
		processor.WithTracerProvider(obs.Tracer), processor.WithMeterProvider(obs.Meter),
	)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx) }()

	// Read the results back until every number has its double.
	readCtx, cancelRead := context.WithTimeout(ctx, time.Minute)
	defer cancelRead()
	seen := map[int64]bool{}
	var sum int64
	for len(seen) < count && err == nil {
		var out []processor.Record[int64, int64]
		if out, err = devkafka.ReadAll(readCtx, brokers, "doubled", codec.Int64(), codec.Int64()); err != nil {
			break
		}
		for _, r := range out {
			if !seen[r.Key] {
				seen[r.Key] = true
				sum += r.Value
			}
		}
		if len(seen) < count {
			select {
			case <-readCtx.Done():
				err = readCtx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	cancel()
	if rerr := <-runErr; rerr != nil {
		return rerr
	}
	if err != nil {
		return fmt.Errorf("reading results: %w (got %d of %d)", err, len(seen), count)
	}
	fmt.Printf("done: %d numbers doubled, sum %d (want %d)\n", len(seen), sum, count*(count+1))
	return nil
}
