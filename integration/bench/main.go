// Command bench measures samsa on a real Kafka broker. Its first argument picks the
// scenario; each prints figures (it is not a test) and asserts only what its section says:
//
//	go run ./integration/bench [throughput] [flags]  samsa vs a hand-written loop vs goka (the default)
//	go run ./integration/bench eos [flags]           exactly-once vs at-least-once throughput
//	go run ./integration/bench mem [flags]           peak RSS against the documented memory budget
//	go run ./integration/bench state [flags]         the cost of checkpointed Redis state
//	go run ./integration/bench soak [flags]          a steady rate for a long time; growth of RSS and goroutines
//	go run ./integration/bench concurrency [flags]   a slow handler (10 ms a record) at Concurrency 1000 vs partition order
//
// `go run ./integration/bench SCENARIO -h` lists a scenario's flags. Every scenario uses
// the Kafka at -brokers ($KAFKA_BROKERS), else starts a single-node Kafka from the Maven
// Central jars (integration/stack) and stops it at the end; it creates fresh topics
// (replication 1, except eos and soak: the broker's default) and deletes them at the end.
// The throughput, eos, mem, state and concurrency scenarios preload their input once,
// spread evenly over its partitions; a trial that runs to the end ends when the group's
// committed offsets reach the input's end offsets (read through a consumer of the group
// that never joins it). A scenario ends with a summary (the machine, load average before
// and after, its tables); -results FILE also writes it as the scenario's Markdown section
// of FILE, replacing that section and keeping the others (`make bench-results`). Exit
// status: 0; 1 when the run fails (or, throughput, an output check); 2 for a flag error;
// 3 when mem's budget is exceeded.
//
// # Throughput (the default scenario)
//
// Records/s end to end of samsa, of hand-written confluent-kafka-go loops with the same
// work and client settings, and of goka (github.com/lovoo/goka on sarama), with ratios.
// The input (-partitions, replication 1) holds -records records: 12-byte keys,
// -value-size byte values. Every trial consumes it all from the beginning with a fresh
// group, passes each record unchanged through an identity handler, produces it to a
// fresh output topic (acks=all), waits for the delivery reports and commits the input
// offsets; it ends when the committed offsets equal the end offsets (polled every 50 ms):
// the same end for every contestant. records/s is -records over the time from the first
// batch (goka: the first record) handed to user code until that end; the process start
// and group join before it are reported as the join.
//
//   - samsa: processor.New, codec.Bytes() both ways, a handler that Sends every record of
//     the batch (idempotent producer). samsa-nocopy (not run by default) uses input
//     decoders that do not copy, to price codec.Bytes' copy; samsa-otel, -trace, -trace1,
//     -metrics and -hdr price tracing and metrics (see -contestants).
//   - baseline: one poll goroutine collects per-partition batches of -batch records (or
//     what arrived within the batch wait) and produces them, re-using the consumed
//     *kafka.Message, with the batch as the opaque; a delivery goroutine counts reports
//     per batch and, once a batch and every earlier one on its partition are
//     acknowledged, stores the offset after it (auto-store off; librdkafka commits stored
//     offsets asynchronously). Every partition's batches are in flight at once.
//     baseline-2g produces on a second goroutine so Poll and Produce overlap; loop is the
//     baseline at its own fastest client settings, the yardstick. Ratios are taken
//     against the strongest of them (by median).
//   - goka: goka v1.1.14 (sarama v1.45.1), the binary built once per run from
//     integration/gokabench (its own module: goka and sarama stay out of go.mod).
//     goka.Input -> callback -> ctx.Emit to a goka.Output, codec.Bytes, key kept; goka's
//     defaults except acks=all, a fresh group reading from the oldest offset and
//     -commit-interval as sarama's auto-commit interval. Kept defaults include Snappy
//     compression (-goka-compression none turns it off), no idempotence and a 100 ms /
//     64 KiB producer flush. sarama keeps the highest marked offset, so goka does not keep
//     the "every earlier offset acknowledged" order (see gokabench's doc). No group table,
//     no loop topic.
//
// samsa and the baselines get the same librdkafka properties: the baseline mirrors the
// framework's configuration (processor/config.go, internal/group, internal/produce),
// -consumer and -producer go to both, and at start the effective configuration of both
// sides' clients (debug=conf) is compared and any difference printed.
//
// Each trial runs its contestant in a fresh child process (this binary re-executed with
// -child, or gokabench), stopped with SIGTERM at the end (SIGKILL after 45 s). CPU per
// record is the child's user+sys time (client threads included) over its whole life:
// start-up, join, trial, shutdown. max RSS is its peak RSS (VmHWM sampled every 50 ms:
// rusage's ru_maxrss would include the harness's, inherited through vfork), so it holds
// the contestant alone; each binary's idle max RSS (run with -h) is printed as the floor.
// Allocations are the child's Go heap allocations over its life. After each trial,
// outside the measured window, a reader checks the output holds every input key with
// its value: missing and corrupt records mark the trial FAILED (out of the medians; exit
// 1 after the summary); duplicates (at-least-once) are reported.
//
// The main comparison alternates the contestants trial by trial (see -contestants) and
// prints per contestant the median and min-max of records/s and max RSS, and the ratios
// of each samsa contestant to the strongest baseline and to goka (max RSS target: at
// most 1.5x goka's). Then: the budget curve (samsa at each -budget-curve
// MaxBufferedBytes against the loop), the tuning comparison (baseline and samsa at
// several consumer prefetch settings), and the latency mode (in this process, as it
// needs a per-batch hook): -latency-rate records/s for -latency-duration, each value
// stamped; per record the time from the load producer's Produce to a reader seeing the
// copy in the output (acks=all), per batch from its oldest record's Produce to the
// handler; p50/p99 for the loop and samsa. -cpuprofile, -baseline-cpuprofile,
// -memprofile and -blockprofile profile the last main-comparison trial in the child.
// On a small machine the broker shares the CPUs, so CPU per record costs throughput twice.
//
// # Eos
//
// Exactly-once against at-least-once throughput at several CommitInterval cadences
// (-commit). Each trial runs a processor in this process over the -records input with a
// fresh group and output topic, an identity handler (codec.Bytes), and the same Config
// except ExactlyOnce: at-least-once (idempotent producer, offsets committed every
// CommitInterval after the outputs are acknowledged) or exactly-once (outputs and offsets
// in one transaction every CommitInterval, input read read_committed). records/s is from
// the first batch to the committed end (the join, for exactly-once InitTransactions too,
// is printed apart). Trials alternate ALO, EOS per cadence; medians (min..max) and
// eos/alo per cadence. The end is seen when a commit lands, so both modes pay up to one
// CommitInterval after the last record (raise -records to shrink its weight). Exactly-
// once trials print the transaction markers in the output (about one per partition per
// transaction). With one broker this prices the transaction protocol, not replication.
//
// # Mem
//
// Checks the budget of processor's package doc ("Memory") with a slow handler. For each
// -max-buffered MaxBufferedBytes a child ("mem -child") runs processor.New with
// codec.Bytes() both ways, a fresh group over the preloaded input and a handler that
// sleeps 1 ms per record and then sends each to an output, for -duration; the child,
// not the harness, is measured. Every 250 ms it samples VmRSS and VmHWM, the Go heap
// (runtime/metrics, live and unswept), glibc's malloc in use and held (mallinfo2:
// librdkafka's memory), the records handled, and the outputs in flight (sent minus the
// processor's samsa.records.produced counter, counted when a batch settles). Peak RSS is
// the larger of the sampled VmRSS and the final VmHWM. The baseline is an idle
// processor's peak RSS (same child, empty topic, -idle-duration). The budget, from the
// configuration each child used:
//
//	H' max(MaxBufferedBytes, partitions × 256 KiB)      (the default MaxBufferedBytes: at least partitions × 128 KiB)
//	held  2 H'                                          records held: fetched, handled, in flight
//	O     held                                          their outputs (one same-sized output per input)
//	P  queued.max.messages.kbytes × 1024 + fetch.max.bytes   librdkafka's prefetch and its one-response overshoot
//	I  the idle processor's live Go heap
//	budget = 2 × (held + O + I) + 2 × (P + O) = 6 held + 2 P + 2 I
//
// (Go: partitions at their share hold the poll back, and GOGC=100 lets the heap grow to
// twice what is live; C: glibc may keep up to twice what is in use.) The claim checked is
// peak RSS − baseline ≤ budget; it exits 3 when a configuration exceeds it.
//
// # Concurrency
//
// A handler waiting -delay per record, as one calling a service does, over -keys keys
// (key k in partition k mod partitions). In each of -trials rounds: ordered (Concurrency
// 1), key (Concurrency -concurrency, Ordering ByKey) and unordered (Ordering Unordered),
// each with a fresh group, in this process. key and unordered run until every record is
// committed; ordered would take hours, so it runs -ordered-time and counts the records
// handled (commits would round down to whole 10 s batches, against it). records/s is
// from the first record handled to that end; CPU is this process's user+sys over the
// trial, peak RSS its VmHWM (reset at the trial's start), Go memory the runtime's total
// minus released; each ratio to ordered is printed.
//
// # State
//
// What exactly-once effects on a Redis table (-redis, $REDIS_ADDR, else a started
// redis-server) cost: the input holds keys "b%05d" over -keys keys and int64 values;
// each trial consumes it with a fresh group into a fresh table namespace. The handler
// reads the batch's keys' sums with one MGET, adds the batch and writes the new sums:
// with the checkpoint on, table.Apply (one Lua script writing the sums and the applied
// offset) and processor.WithCheckpoint(table); off, Partition(p).PutMany (one MSET). records/s
// is from the first batch until every record is handled ("handled") and until the
// committed end ("committed"). The sums are checked after each trial. Trials alternate
// on, off; medians per mode and on/off, also per adjacent pair. CPU per record is this
// process's and redis-server's (INFO cpu) over the trial; all three share the machine.
//
// # Soak
//
// One processor at -rate for -duration with tracing (to $OTEL_EXPORTER_OTLP_ENDPOINT, or
// recorded and dropped) and Prometheus metrics, scraped over HTTP every -sample:
// resident memory, goroutines, heap in use, Go's mapped memory (sys − released: an upper
// bound of Go's share of RSS, so RSS minus it bounds from below what lies outside Go),
// records consumed and lag. The summary: figures after the warm-up (-warmup: a third of
// the run, at most 10 minutes), at the end, their maxima and least-squares slopes (MiB
// per hour, also over the second half). It asserts nothing; `make soak` runs 30 minutes.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	scenario, args := "throughput", os.Args[1:]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		scenario, args = args[0], args[1:]
	}
	mains := map[string]func([]string) int{"throughput": throughputMain, "eos": eosMain, "mem": memMain,
		"state": stateMain, "soak": soakMain, "concurrency": concurrencyMain}
	if m, ok := mains[scenario]; ok {
		os.Exit(m(args))
	}
	fmt.Fprintf(os.Stderr, "bench: unknown scenario %q: want throughput, eos, mem, state, soak or concurrency\n", scenario)
	os.Exit(2)
}

// exitError is an error that asks for a particular exit status.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

// run runs a scenario's f with a context that ends on SIGINT or SIGTERM, prints the
// summary f returns (also when f fails), writes it to -results after a successful run,
// and returns the exit status: 0, the exitError's code, else 1 with the error on stderr.
func (o *input) run(f func(ctx context.Context) (*summary, error)) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := runInfo{scenario: o.scenario, start: time.Now(), load0: loadAvg()}
	sum, err := f(ctx)
	r.load1 = loadAvg()
	if sum != nil {
		sum.print(os.Stdout, r)
		if err == nil && o.results != "" {
			if err = writeResults(o.results, o.scenario, sum.markdown(r, o.results)); err == nil {
				fmt.Printf("wrote the %s section of %s\n", o.scenario, o.results)
			}
		}
	}
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "bench:", err)
	if ee := (exitError{}); errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// usageError prints a flag-validation error and returns the exit status 2.
func (o *input) usageError(err error) int {
	fmt.Fprintf(os.Stderr, "bench %s: %v\n", o.scenario, err)
	return 2
}
