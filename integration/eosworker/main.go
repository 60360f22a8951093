// Command eosworker is the exactly-once processor the EOS fault tests run in its own OS
// process, so it can be SIGKILLed, SIGSTOPped and fenced: an identity handler from one
// string-keyed topic to another in processor.Config.ExactlyOnce mode. Each output keeps
// its input's key, and its value records where it came from:
//
//	"<input value>|<input partition>|<input offset>|<pid>"
//
// so a checker can compare the output with the input exactly (partition, offset, key and
// value) and tell which process wrote each copy. Build it with -tags chaos to compile the
// fail-points in: $SAMSA_FAILPOINT=name[:N|:pP] then SIGKILLs the process at that point
// (internal/failpoint). It runs until SIGTERM or SIGINT and exits 0 after a clean stop,
// 1 when the processor fails (the error, and its Kafka error class when there is one, go
// to stderr).
//
//	eosworker -brokers 127.0.0.1:9092 -group g -in in -out out [-batch 200]
//	          [-commit 250ms] [-session 6s] [-txnid ID] [-instance ID] [-v]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/failpoint"
	"github.com/samsa-go/samsa/processor"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "eosworker: processor failed:", err)
		var kerr kafka.Error
		if errors.As(err, &kerr) {
			fmt.Fprintf(os.Stderr, "eosworker: kafka error class: code=%s fatal=%t abortable=%t retriable=%t\n",
				kerr.Code(), kerr.IsFatal(), kerr.TxnRequiresAbort(), kerr.IsRetriable())
		}
		os.Exit(1)
	}
}

func run() error {
	brokers := flag.String("brokers", os.Getenv("KAFKA_BROKERS"), "bootstrap servers (default $KAFKA_BROKERS)")
	group := flag.String("group", "", "consumer group")
	in := flag.String("in", "", "input topic")
	out := flag.String("out", "", "output topic")
	batch := flag.Int("batch", 200, "BatchSize")
	batchWait := flag.Duration("batch-wait", 0, "BatchWait (0: default)")
	inflight := flag.Int("inflight", 0, "MaxInFlightBatches (0: default)")
	commit := flag.Duration("commit", 250*time.Millisecond, "CommitInterval: one transaction per interval")
	session := flag.Duration("session", 6*time.Second, "SessionTimeout")
	heartbeat := flag.Duration("heartbeat", time.Second, "HeartbeatInterval")
	txnID := flag.String("txnid", "", "TransactionalID (empty: the framework's default: group-instance with -instance, else group-random)")
	txnTimeout := flag.Duration("txn-timeout", 0, "TransactionTimeout (0: default)")
	instance := flag.String("instance", "", "InstanceID: static membership (empty: dynamic)")
	verbose := flag.Bool("v", false, "log at info level (default: warnings)")
	flag.Parse()
	if *group == "" || *in == "" || *out == "" || *brokers == "" {
		flag.Usage()
		return errors.New("-brokers, -group, -in and -out are required")
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	pid := os.Getpid()
	tag := strconv.Itoa(pid)
	output := processor.NewOutput(*out, codec.String(), codec.String())
	p, err := processor.New(processor.Config{
		Membership: processor.Membership{Brokers: *brokers, SessionTimeout: *session, HeartbeatInterval: *heartbeat, InstanceID: *instance, // The client id names the process in the group's member list (DescribeConsumerGroups),
			// so a test can tell which partitions each worker owns.
			Overrides: map[string]any{"client.id": "eosworker-" + tag}},
		Group:              *group,
		BatchSize:          *batch,
		BatchWait:          *batchWait,
		MaxInFlightBatches: *inflight,
		CommitInterval:     *commit,
		ExactlyOnce:        true,
		TransactionalID:    *txnID,
		TransactionTimeout: *txnTimeout,
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
	log.Warn("eosworker: running", "pid", pid, "group", *group, "in", *in, "out", *out, "instance", *instance,
		"txnid", *txnID, "failpoints_compiled", failpoint.Enabled, "failpoint", os.Getenv("SAMSA_FAILPOINT"))
	if err := p.Run(ctx); err != nil {
		return err
	}
	log.Warn("eosworker: stopped cleanly", "pid", pid)
	return nil
}
