// Printers: twenty long-lived processes spread over however many nodes are running.
//
//	go run ./examples/printers            # one node on an in-process broker
//	KAFKA_BROKERS=localhost:9092 go run ./examples/printers   # in two or three terminals
//
// Each printer prints its number every second. Start a second and a third node against
// the same Kafka and watch the slices move; stop one (Ctrl-C) and watch its printers stop
// there before they start elsewhere. -for limits the run (the tests use it).
// OTEL_EXPORTER_OTLP_ENDPOINT sends the hand-off spans to Jaeger; METRICS_ADDR serves
// /metrics.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/samsa-go/samsa/distributed"
	"github.com/samsa-go/samsa/examples/internal/devkafka"
	"github.com/samsa-go/samsa/metrics"
)

func main() {
	runFor := flag.Duration("for", 0, "stop after this long (0: until interrupted)")
	name := flag.String("name", "printers", "cluster name (consumer group; technical topic samsa.distributed.<name>)")
	printers := flag.Int("printers", 20, "number of printers")
	every := flag.Duration("every", time.Second, "how often each printer prints")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *runFor)
		defer cancel()
	}
	if err := run(ctx, *name, *printers, *every); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, name string, n int, every time.Duration) error {
	brokers, release, err := devkafka.Brokers(ctx)
	if err != nil {
		return err
	}
	defer release()
	obs, err := metrics.FromEnv(ctx, "printers", slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer obs.Close()

	node, err := distributed.New(distributed.Config{Membership: distributed.Membership{Brokers: brokers, SessionTimeout: 10 * time.Second}, Partitions: 8},
		distributed.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		distributed.WithTracerProvider(obs.Tracer), distributed.WithMeterProvider(obs.Meter))
	if err != nil {
		return err
	}
	procs := make([]distributed.Process, n)
	for i := range procs {
		procs[i] = func(ctx context.Context) error {
			info, _ := distributed.InfoFrom(ctx)
			fmt.Printf("printer %2d started on %s (slice %d, token %d)\n", i, info.Node, info.Slice, info.Token)
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					fmt.Printf("printer %2d stopped\n", i)
					return nil
				case <-t.C:
					fmt.Printf("printer %2d\n", i)
				}
			}
		}
	}
	return node.Run(ctx, name, procs) // blocks until ctx ends
}
