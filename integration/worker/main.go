// Command worker is the processor the crash and fault tests run in an OS process of its
// own, so that it can be SIGKILLed, SIGSTOPped, fenced, cut off by a proxy and restarted.
// -mode picks what it processes:
//
//   - copy: an identity handler from one string-keyed topic (-in) to another (-out). Each
//     output keeps its input's key, and its value records where it came from,
//     "<input value>|<input partition>|<input offset>|<pid>", so a checker can compare
//     the output with the input exactly and tell which process wrote each copy.
//   - sum: a running sum per key kept in Redis (-redis, namespace -ns) with exactly-once
//     effects (processor.WithCheckpoint(table)). It reads string keys and int64 values
//     (codec.Int64) and keeps, per input key k, "sum/"+k (the sum of k's values) and
//     "cnt/"+k (how many of k's records were counted: a checker tells double counts from
//     losses). With -out, each counted record also sends its key's count after it to that
//     topic in the same batch (update state and emit). Each batch reads its keys with
//     GetMany, adds the batch and writes back with the batch's offsets in one Apply;
//     ErrAlreadyApplied is success. Records with a null key or value add nothing, but
//     their offsets are recorded too. The error policy is Retry(1000, backoff up to 1 s)
//     then Stop, so a Redis outage shorter than the retries is waited out.
//     A *ConflictError is logged as "worker: state conflict" (kind lost or fenced) and
//     returned like any other failure.
//
// -eos runs either in the exactly-once mode (for copy, BatchSize defaults to 200 and
// CommitInterval to 250ms instead of 500 and the processor's default; sum's BatchSize
// default is 100 in both modes). The client.id is "worker-<pid>", so a test can tell the
// group's members apart. Build it with -tags chaos to compile the fail-points in:
// $SAMSA_FAILPOINT=name[:N|:pP] then SIGKILLs the process at that point
// (internal/failpoint). It runs until SIGTERM or SIGINT and exits 0 after a clean stop, 2
// on bad flags, 1 when the processor fails (the error, and its Kafka error class when
// there is one, go to stderr).
//
//	worker -mode copy -brokers 127.0.0.1:9092 -group g -in in -out out [-eos] [-batch 500]
//	worker -mode sum -brokers 127.0.0.1:9092 -redis 127.0.0.1:6379 -group g -in in -ns sums [-out totals] [-eos]
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
	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/failpoint"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/state"
)

func main() {
	f, err := parse()
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		flag.Usage()
		os.Exit(2)
	}
	if err := run(f); err != nil {
		fmt.Fprintln(os.Stderr, "worker: processor failed:", err)
		var kerr kafka.Error
		if errors.As(err, &kerr) {
			fmt.Fprintf(os.Stderr, "worker: kafka error class: code=%s fatal=%t abortable=%t retriable=%t\n",
				kerr.Code(), kerr.IsFatal(), kerr.TxnRequiresAbort(), kerr.IsRetriable())
		}
		os.Exit(1)
	}
}

// flags are the command line.
type flags struct {
	mode, brokers, group, in, out, protocol, instance, txnID string
	batch, inflight                                          int
	commit, session, heartbeat                               time.Duration
	eos, verbose                                             bool
	redis, ns                                                string // sum
}

func parse() (flags, error) {
	var f flags
	flag.StringVar(&f.mode, "mode", "", "copy or sum")
	flag.StringVar(&f.brokers, "brokers", os.Getenv("KAFKA_BROKERS"), "bootstrap servers (default $KAFKA_BROKERS)")
	flag.StringVar(&f.group, "group", "", "consumer group")
	flag.StringVar(&f.in, "in", "", "input topic")
	flag.StringVar(&f.out, "out", "", "output topic (copy: required; sum: each record's key's count after it, optional)")
	flag.IntVar(&f.batch, "batch", 0, "BatchSize (0: copy 500, copy -eos 200, sum 100)")
	flag.IntVar(&f.inflight, "inflight", 0, "MaxInFlightBatches (0: default)")
	flag.DurationVar(&f.commit, "commit", 0, "CommitInterval (0: copy -eos 250ms, else the processor's default)")
	flag.DurationVar(&f.session, "session", 6*time.Second, "SessionTimeout")
	flag.DurationVar(&f.heartbeat, "heartbeat", time.Second, "HeartbeatInterval")
	flag.StringVar(&f.protocol, "protocol", "", "group Protocol: cooperative, eager or consumer (default: the processor's)")
	flag.StringVar(&f.instance, "instance", "", "InstanceID: static membership (empty: dynamic)")
	flag.BoolVar(&f.eos, "eos", false, "exactly-once mode")
	flag.StringVar(&f.txnID, "txnid", "", "TransactionalID with -eos (empty: the framework's default)")
	flag.StringVar(&f.redis, "redis", os.Getenv("REDIS_ADDR"), "sum: Redis host:port (default $REDIS_ADDR)")
	flag.StringVar(&f.ns, "ns", "", "sum: namespace of the Redis table")
	flag.BoolVar(&f.verbose, "v", false, "log at info level (default: warnings)")
	flag.Parse()
	if f.brokers == "" || f.group == "" || f.in == "" {
		return f, errors.New("-brokers, -group and -in are required")
	}
	switch f.mode {
	case "copy":
		if f.out == "" {
			return f, errors.New("-mode copy needs -out")
		}
		if f.batch == 0 {
			f.batch = 500
			if f.eos {
				f.batch = 200
			}
		}
		if f.commit == 0 && f.eos {
			f.commit = 250 * time.Millisecond
		}
	case "sum":
		if f.redis == "" || f.ns == "" {
			return f, errors.New("-mode sum needs -redis and -ns")
		}
		if f.batch == 0 {
			f.batch = 100
		}
	default:
		return f, fmt.Errorf("-mode %q: want copy or sum", f.mode)
	}
	return f, nil
}

func run(f flags) error {
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	pid := os.Getpid()
	cfg := processor.Config{
		Membership: processor.Membership{Brokers: f.brokers, SessionTimeout: f.session, HeartbeatInterval: f.heartbeat,
			Protocol: processor.Protocol(f.protocol), InstanceID: f.instance,
			Overrides: map[string]any{"client.id": "worker-" + strconv.Itoa(pid)}},
		Group:              f.group,
		BatchSize:          f.batch,
		MaxInFlightBatches: f.inflight,
		CommitInterval:     f.commit,
		ExactlyOnce:        f.eos,
		TransactionalID:    f.txnID,
	}
	var p interface{ Run(context.Context) error }
	var err error
	if f.mode == "copy" {
		p, err = copier(cfg, f, log)
	} else {
		var closeRedis func()
		p, closeRedis, err = summer(cfg, f, log)
		if closeRedis != nil {
			defer closeRedis()
		}
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Warn("worker: running", "mode", f.mode, "eos", f.eos, "pid", pid, "group", f.group, "in", f.in, "out", f.out,
		"instance", f.instance, "failpoints_compiled", failpoint.Enabled, "failpoint", os.Getenv("SAMSA_FAILPOINT"))
	if err := p.Run(ctx); err != nil {
		return err
	}
	log.Warn("worker: stopped cleanly", "pid", pid)
	return nil
}

// copier is -mode copy.
func copier(cfg processor.Config, f flags, log *slog.Logger) (*processor.Processor[string, string], error) {
	tag := strconv.Itoa(os.Getpid())
	output := processor.NewOutput(f.out, codec.String(), codec.String())
	return processor.New(cfg, []processor.Input[string, string]{{Topic: f.in, Key: codec.String(), Value: codec.String()}},
		processor.HandlerFunc[string, string](func(_ context.Context, b *processor.Batch[string, string]) error {
			for _, r := range b.Records {
				v := r.Value + "|" + strconv.Itoa(int(r.Partition)) + "|" + strconv.FormatInt(r.Offset, 10) + "|" + tag
				if err := output.Send(b, r.Key, v); err != nil {
					return err
				}
			}
			return nil
		}), processor.WithLogger(log))
}

// Table key prefixes of -mode sum.
const (
	sumPrefix   = "sum/"
	countPrefix = "cnt/"
)

// summer is -mode sum. go-redis runs at its defaults: a production client, nothing tuned
// for the tests.
func summer(cfg processor.Config, f flags, log *slog.Logger) (*processor.Processor[string, int64], func(), error) {
	client := redis.NewClient(&redis.Options{Addr: f.redis})
	closeClient := func() { client.Close() }
	table, err := state.NewTable(client, f.ns, codec.String(), codec.Int64())
	if err != nil {
		return nil, closeClient, err
	}
	h := &sums{table: table, log: log}
	if f.out != "" {
		o := processor.NewOutput(f.out, codec.String(), codec.Int64())
		h.out = &o
		cfg.Outputs = []string{f.out}
	}
	cfg.ErrorPolicy = processor.Retry(1000, processor.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}, processor.Stop())
	p, err := processor.New(cfg, []processor.Input[string, int64]{{Topic: f.in, Key: codec.String(), Value: codec.Int64()}},
		h, processor.WithCheckpoint(table), processor.WithLogger(log))
	return p, closeClient, err
}

// sums adds each batch to the sums and counts of its keys.
type sums struct {
	table *state.Table[string, int64]
	out   *processor.Output[string, int64] // nil: no outputs
	log   *slog.Logger
}

func (h *sums) Handle(ctx context.Context, b *processor.Batch[string, int64]) error {
	index := map[string]int{} // input key -> position in keys
	var keys []string         // input keys, first-seen order
	for _, r := range b.Records {
		if r.NullKey || r.Tombstone {
			continue
		}
		if _, ok := index[r.Key]; !ok {
			index[r.Key] = len(keys)
			keys = append(keys, r.Key)
		}
	}
	tkeys := make([]string, 0, 2*len(keys)) // sum/k0, cnt/k0, sum/k1, cnt/k1, ...
	for _, k := range keys {
		tkeys = append(tkeys, sumPrefix+k, countPrefix+k)
	}
	// A batch with nothing to add still records its offsets (Apply with no puts), so the
	// table's applied offsets follow every record the group commits.
	cur, _, err := h.table.Partition(b.Partition).GetMany(ctx, tkeys)
	if err != nil {
		return err
	}
	for _, r := range b.Records {
		if r.NullKey || r.Tombstone {
			continue
		}
		i := index[r.Key]
		cur[2*i] += r.Value
		cur[2*i+1]++
		if h.out != nil {
			if err := h.out.Send(b, r.Key, cur[2*i+1]); err != nil {
				return err
			}
		}
	}
	puts := make([]state.Entry[string, int64], len(tkeys))
	for i := range tkeys {
		puts[i] = state.Entry[string, int64]{Key: tkeys[i], Value: cur[i]}
	}
	next := b.NextOffsets()
	err = h.table.Apply(ctx, b.Partition, puts, nil, next)
	var ce *state.ConflictError
	switch {
	case errors.Is(err, state.ErrAlreadyApplied):
		h.log.Warn("worker: batch already applied", "partition", b.Partition, "records", len(b.Records), "next", fmt.Sprint(next))
		return nil
	case errors.As(err, &ce):
		kind := "fenced"
		if errors.Is(err, state.ErrStateLost) {
			kind = "lost"
		}
		h.log.Error("worker: state conflict", "kind", kind, "partition", b.Partition, "err", err)
	}
	return err
}
