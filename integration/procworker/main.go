// Command procworker is the processor the crash tests run in its own OS process, so it can
// be SIGKILLed: an identity handler from one string-keyed topic to another, whose output
// value is "<input value>|<input partition>|<input offset>|<pid>". It runs until SIGTERM
// or SIGINT and exits 0 after a clean stop, 1 when the processor fails.
//
//	procworker -brokers 127.0.0.1:9092 -group g -in in -out out [-batch 500] [-inflight 4] [-protocol consumer]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "procworker:", err)
		os.Exit(1)
	}
}

func run() error {
	brokers := flag.String("brokers", os.Getenv("KAFKA_BROKERS"), "bootstrap servers (default $KAFKA_BROKERS)")
	group := flag.String("group", "", "consumer group")
	in := flag.String("in", "", "input topic")
	out := flag.String("out", "", "output topic")
	batch := flag.Int("batch", 500, "BatchSize")
	inflight := flag.Int("inflight", 0, "MaxInFlightBatches (0: default)")
	session := flag.Duration("session", 6*time.Second, "SessionTimeout")
	heartbeat := flag.Duration("heartbeat", time.Second, "HeartbeatInterval")
	commit := flag.Duration("commit", 0, "CommitInterval (0: default)")
	protocol := flag.String("protocol", "", "group Protocol: cooperative, eager or consumer (default: the processor's)")
	verbose := flag.Bool("v", false, "log at info level (default: warnings)")
	flag.Parse()
	if *group == "" || *in == "" || *out == "" || *brokers == "" {
		flag.Usage()
		return fmt.Errorf("-brokers, -group, -in and -out are required")
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	tag := strconv.Itoa(os.Getpid())
	output := processor.NewOutput(*out, codec.String(), codec.String())
	p, err := processor.New(processor.Config{
		Membership:         processor.Membership{Brokers: *brokers, SessionTimeout: *session, HeartbeatInterval: *heartbeat, Protocol: processor.Protocol(*protocol)},
		Group:              *group,
		BatchSize:          *batch,
		MaxInFlightBatches: *inflight,
		CommitInterval:     *commit,
	}, []processor.Input[string, string]{{Topic: *in, Key: codec.String(), Value: codec.String()}},
		processor.HandlerFunc[string, string](func(_ context.Context, b *processor.Batch[string, string]) error {
			for _, r := range b.Records {
				v := r.Value + "|" + strconv.Itoa(int(r.Partition)) + "|" + strconv.FormatInt(r.Offset, 10) + "|" + tag
				if err := output.Send(b, r.Key, v); err != nil {
					return err
				}
			}
			return nil
		}), processor.WithLogger(log))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Warn("procworker: running", "pid", os.Getpid(), "group", *group, "in", *in, "out", *out)
	if err := p.Run(ctx); err != nil {
		return err
	}
	log.Warn("procworker: stopped cleanly", "pid", os.Getpid())
	return nil
}
