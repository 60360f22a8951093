// Command gokabench runs one goka identity pipeline, the goka contestant of the samsa
// benchmark harness (integration/bench), which builds this binary and runs it once per
// trial:
//
//	gokabench -brokers localhost:9092 -input in -output out -group g
//
// It is its own module so that goka and sarama stay out of samsa's go.mod.
//
// # The pipeline
//
// One goka processor: goka.DefineGroup with goka.Input on -input and goka.Output to
// -output, both with goka's codec.Bytes (the []byte passes unchanged both ways), and a
// callback that emits every record unchanged with its key. No Persist, Loop, Lookup or
// Join: goka creates no group table, loopback topic or local storage, and its topic
// manager only reads the input's partition count. The output topic must exist (the
// harness creates it).
//
// # Configuration
//
// goka.DefaultConfig() (sarama v1.45.1) with three changes: Producer.RequiredAcks =
// WaitForAll (acks=all, as samsa's producer; goka's default is WaitForLocal);
// Consumer.Offsets.Initial = OffsetOldest (a fresh group reads the input from the
// beginning; goka's default for streams is OffsetNewest); and
// Consumer.Offsets.AutoCommit.Interval = -commit-interval when given, so every
// contestant commits on the same cadence (sarama's default is 1s).
//
// Everything else is goka's or sarama's default, among them: Version V2_0_0_0 (goka's
// pin), Snappy compression (goka; samsa and the harness's baselines produce uncompressed;
// -compression none turns it off), Producer.Flush.Frequency 100ms and Flush.Bytes 64 KiB
// (goka), Producer.Retry.Max 10 (goka), Producer.Idempotent false and Net.MaxOpenRequests
// 5 (sarama: a retry can duplicate or reorder), the FNV-1a key hasher for output
// partitions and the copartitioning balance strategy (goka), sarama's fetch settings
// (Fetch.Min 1 byte, Fetch.Default 1 MiB per partition, MaxWaitTime 500ms, which only
// matters when no data is waiting) and 256-message channel buffers.
//
// # Delivery
//
// goka marks an input record's offset only after every emit of its callback completed:
// the callback's cbContext counts each Emit and chains emitDone onto the producer's
// promise, which the goroutine reading sarama's Successes (or Errors) finishes after the
// broker's acknowledgement (acks=all here); tryCommit then calls
// session.MarkOffset(offset+1), and sarama's offset manager commits marked offsets every
// AutoCommit.Interval and when the session closes. An emit error fails the processor.
//
// So each record is acknowledged before its own offset is marked, but marks are not
// ordered: MarkOffset keeps the highest offset marked so far, so if record n+1's output
// (to another partition) is acknowledged before record n's, offset n+2 can be committed
// while n is in flight. With one healthy broker responses come back in request order and
// this does not happen; after a failed emit or a crash it can skip a record. goka's
// guarantee is at-least-once per record while emits succeed, without the "every earlier
// offset acknowledged" order samsa and the baseline keep.
//
// # Reporting
//
// It writes to stdout "first <unix ns>" when the callback sees its first record, and
// "mem <mallocs> <bytes allocated> <GCs>" (runtime.MemStats) just before it exits. It
// runs until SIGTERM or SIGINT, then stops the processor (which commits the marked
// offsets) and exits 0, or 1 if the processor failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
	"github.com/lovoo/goka/codec"
)

func main() {
	var (
		brokers        = flag.String("brokers", "localhost:9092", "bootstrap servers, comma-separated")
		input          = flag.String("input", "", "input topic (read from the beginning by a fresh group)")
		output         = flag.String("output", "", "output topic (must exist)")
		group          = flag.String("group", "", "consumer group (goka group)")
		commitInterval = flag.Duration("commit-interval", 0, "sarama Consumer.Offsets.AutoCommit.Interval (0: sarama's default, 1s)")
		compression    = flag.String("compression", "", "producer compression: none, snappy, lz4, zstd, gzip (empty: goka's default, snappy)")
	)
	flag.Parse()
	if *input == "" || *output == "" || *group == "" {
		fmt.Fprintln(os.Stderr, "gokabench: -input, -output and -group are required")
		os.Exit(2)
	}
	cfg, err := config(*commitInterval, *compression)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gokabench:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err = run(ctx, strings.Split(*brokers, ","), *input, *output, *group, cfg)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("mem %d %d %d\n", ms.Mallocs, ms.TotalAlloc, ms.NumGC)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gokabench:", err)
		os.Exit(1)
	}
}

func config(commitInterval time.Duration, compression string) (*sarama.Config, error) {
	cfg := goka.DefaultConfig()
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	if commitInterval > 0 {
		cfg.Consumer.Offsets.AutoCommit.Interval = commitInterval
	}
	if compression != "" {
		var c sarama.CompressionCodec
		if err := c.UnmarshalText([]byte(compression)); err != nil {
			return nil, fmt.Errorf("-compression %q: %w", compression, err)
		}
		cfg.Producer.Compression = c
	}
	return cfg, cfg.Validate()
}

func run(ctx context.Context, brokers []string, input, output, group string, cfg *sarama.Config) error {
	// Every builder (consumer group, consumer, producer, topic manager) starts from the
	// global config.
	goka.ReplaceGlobalConfig(cfg)
	var first sync.Once
	out := goka.Stream(output)
	g := goka.DefineGroup(goka.Group(group),
		goka.Input(goka.Stream(input), new(codec.Bytes), func(gctx goka.Context, msg any) {
			first.Do(func() { fmt.Printf("first %d\n", time.Now().UnixNano()) })
			gctx.Emit(out, gctx.Key(), msg)
		}),
		goka.Output(out, new(codec.Bytes)),
	)
	p, err := goka.NewProcessor(brokers, g)
	if err != nil {
		return err
	}
	if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
