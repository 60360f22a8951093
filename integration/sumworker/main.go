// Command sumworker is the stateful processor the state fault tests run in its own OS
// process, so it can be SIGKILLed (at random or at the framework's fail-points) and
// restarted, and so Redis can be stopped under it: the Kafka Streams EOS test's running
// sum per key, kept in Redis with exactly-once effects.
//
// It reads string keys and int64 values (codec.Int64: 8-byte big-endian) from one topic
// in the at-least-once mode (the default; -eos: exactly-once) with
// processor.WithCheckpoint(table), and keeps
// in a state.Table[string, int64] (namespace -ns), per input key k:
//
//	"sum/" + k   the sum of k's values
//	"cnt/" + k   how many of k's records were counted
//
// (the count lets a checker tell double counts from losses). With -out, each counted
// record also sends its key's count after it to that topic (string key, int64 value), in
// the same batch as the state update: the "update state and emit" pattern, whose outputs
// a checker compares with the counts. Each batch reads the current
// values of its keys with table.Partition(p).GetMany, adds the batch, and writes them back
// with the batch's offsets in one table.Apply(ctx, p, puts, nil, b.NextOffsets());
// ErrAlreadyApplied is success. Records with a null key or value add nothing, but their
// offsets are recorded too.
//
// The error policy is Retry(-retries, backoff up to -backoff-max) then Stop, so a Redis
// outage shorter than the retries is waited out by the running process. A *ConflictError
// (ErrStateLost: Redis lost acknowledged writes; ErrFenced: another writer took the
// partition) is logged at error level with "sumworker: state conflict" and returned like
// any other failure (it is permanent for this process, so the retries fail too, and the
// processor stops after them).
//
// Build it with -tags chaos to compile the fail-points in: $SAMSA_FAILPOINT=name[:N|:pP]
// then SIGKILLs the process there (internal/failpoint). It runs until SIGTERM or SIGINT
// and exits 0 after a clean stop, 1 when the processor fails.
//
//	sumworker -brokers 127.0.0.1:9092 -redis 127.0.0.1:6379 -group g -in in -ns sums
//	          [-out totals] [-eos] [-commit 1s] [-batch 100] [-retries 1000] [-backoff-max 1s] [-session 6s] [-v]
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

	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/failpoint"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/state"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sumworker: processor failed:", err)
		os.Exit(1)
	}
}

// Table key prefixes.
const (
	SumPrefix   = "sum/"
	CountPrefix = "cnt/"
)

func run() error {
	brokers := flag.String("brokers", os.Getenv("KAFKA_BROKERS"), "bootstrap servers (default $KAFKA_BROKERS)")
	redisAddr := flag.String("redis", os.Getenv("REDIS_ADDR"), "Redis host:port (default $REDIS_ADDR)")
	group := flag.String("group", "", "consumer group")
	in := flag.String("in", "", "input topic (string keys, int64 values)")
	ns := flag.String("ns", "", "namespace of the Redis table")
	out := flag.String("out", "", "output topic of each record's key's count after it (default: no outputs)")
	batch := flag.Int("batch", 100, "BatchSize")
	inflight := flag.Int("inflight", 0, "MaxInFlightBatches (0: default)")
	retries := flag.Int("retries", 1000, "retries of a failed batch before the processor stops")
	backoffMax := flag.Duration("backoff-max", time.Second, "longest wait between retries")
	session := flag.Duration("session", 6*time.Second, "SessionTimeout")
	heartbeat := flag.Duration("heartbeat", time.Second, "HeartbeatInterval")
	commit := flag.Duration("commit", 0, "CommitInterval (0: default)")
	eos := flag.Bool("eos", false, "exactly-once mode (outputs and offsets in transactions; state effects made after each commit)")
	verbose := flag.Bool("v", false, "log at info level (default: warnings)")
	flag.Parse()
	if *group == "" || *in == "" || *ns == "" || *brokers == "" || *redisAddr == "" {
		flag.Usage()
		return errors.New("-brokers, -redis, -group, -in and -ns are required")
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	pid := os.Getpid()

	// go-redis's defaults: a production client, nothing tuned for the tests.
	client := redis.NewClient(&redis.Options{Addr: *redisAddr})
	defer client.Close()
	table, err := state.NewTable(client, *ns, codec.String(), codec.Int64())
	if err != nil {
		return err
	}
	h := &summer{table: table, log: log}
	var outputs []string
	if *out != "" {
		o := processor.NewOutput(*out, codec.String(), codec.Int64())
		h.out = &o
		outputs = []string{*out}
	}
	p, err := processor.New(processor.Config{
		Membership:         processor.Membership{Brokers: *brokers, SessionTimeout: *session, HeartbeatInterval: *heartbeat, Overrides: map[string]any{"client.id": "sumworker-" + strconv.Itoa(pid)}},
		Group:              *group,
		Outputs:            outputs,
		ExactlyOnce:        *eos,
		CommitInterval:     *commit,
		BatchSize:          *batch,
		MaxInFlightBatches: *inflight,
		ErrorPolicy:        processor.Retry(*retries, processor.Backoff{Initial: 50 * time.Millisecond, Max: *backoffMax}, processor.Stop()),
	}, []processor.Input[string, int64]{{Topic: *in, Key: codec.String(), Value: codec.Int64()}},
		h, processor.WithCheckpoint(table), processor.WithLogger(log))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Warn("sumworker: running", "pid", pid, "group", *group, "in", *in, "ns", *ns, "redis", *redisAddr,
		"failpoints_compiled", failpoint.Enabled, "failpoint", os.Getenv("SAMSA_FAILPOINT"))
	if err := p.Run(ctx); err != nil {
		return err
	}
	log.Warn("sumworker: stopped cleanly", "pid", pid)
	return nil
}

// summer adds each batch to the sums and counts of its keys.
type summer struct {
	table *state.Table[string, int64]
	out   *processor.Output[string, int64] // nil: no outputs
	log   *slog.Logger
}

func (h *summer) Handle(ctx context.Context, b *processor.Batch[string, int64]) error {
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
		tkeys = append(tkeys, SumPrefix+k, CountPrefix+k)
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
		h.log.Warn("sumworker: batch already applied", "partition", b.Partition, "records", len(b.Records), "next", fmt.Sprint(next))
		return nil
	case errors.As(err, &ce):
		kind := "fenced"
		if errors.Is(err, state.ErrStateLost) {
			kind = "lost"
		}
		h.log.Error("sumworker: state conflict", "kind", kind, "partition", b.Partition, "err", err)
	}
	return err
}
