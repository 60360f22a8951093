// Command bench measures samsa on a real Kafka broker. Its first argument picks the
// scenario; every scenario prints figures (it is not a test) and asserts only what its
// section says:
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
// The throughput, eos, mem and state scenarios preload their input topic once, spread
// evenly over its partitions, and end a trial when the group's committed offsets reach
// the input's end offsets (read through a consumer of the group that never joins it).
//
// # Throughput (the default scenario)
//
// throughput measures samsa's end-to-end throughput next to a hand-written
// confluent-kafka-go loop that does exactly the same work with exactly the same client
// settings, and next to goka (github.com/lovoo/goka on sarama), and prints the ratios.
//
// The input topic (-partitions partitions, replication 1) is preloaded once per run with
// -records records: 12-byte keys, -value-size byte values, spread evenly over the
// partitions. Every trial then consumes the whole topic from the beginning with a fresh
// consumer group, passes each record unchanged through an identity handler, produces it to
// a fresh output topic (acks=all), waits for the delivery reports and commits the input
// offsets. A trial ends when the group's committed offsets equal the input's end offsets
// (polled with an admin client every 50 ms): the same end condition for every
// contestant. records/s is -records divided by the time from the first batch (goka: the
// first record) handed to user code until that end; the process start and group join
// before it are reported separately as the join.
//
//   - samsa: processor.New with codec.Bytes() on both sides and a handler that Sends every
//     record of the batch to the output (idempotent producer).
//   - baseline: one poll goroutine collects per-partition batches of -batch records (or
//     what arrived within the batch wait), produces them with the batch as the message
//     opaque, re-using the consumed *kafka.Message; a delivery goroutine counts reports per
//     batch and, once a batch and every batch before it on its partition are acknowledged,
//     stores the offset after it (auto-store off). librdkafka commits stored offsets
//     asynchronously (auto-commit on). Every partition's batches are in flight at once.
//   - goka: goka v1.1.14 (sarama v1.45.1) in the binary built from integration/gokabench,
//     its own module so that goka and sarama stay out of go.mod; the harness builds it once
//     per run with go build. One goka processor, goka.Input -> callback -> ctx.Emit to a
//     goka.Output, codec.Bytes both ways, key kept. goka's defaults except acks=all
//     (WaitForAll), reading a fresh group from the oldest offset, and the harness's
//     -commit-interval as sarama's auto-commit interval; among the defaults kept: Snappy
//     compression (-goka-compression none turns it off), no idempotence (sarama's
//     default), 100 ms / 64 KiB producer flush. goka marks an input offset after that
//     record's emits are acknowledged, but sarama keeps the highest mark, so it does not
//     keep the "every earlier offset acknowledged" order samsa and the baseline keep (see
//     integration/gokabench's doc). It creates no topic: no group table, no loop topic.
//
// samsa and the baseline get the same librdkafka properties: the baseline mirrors the
// framework's consumer and producer configuration (processor/config.go, internal/group,
// internal/produce), -consumer and -producer overrides go to both, and at start the
// harness asks librdkafka to dump the effective configuration of both sides' clients
// (debug=conf) and prints any difference, so a change of the framework's defaults cannot
// silently skew the comparison.
//
// # Throughput: one process per trial
//
// Every throughput and tuning trial runs its contestant in a fresh child process: samsa
// and the baselines in this binary re-executed with -child (a JSON trial spec), goka in
// the gokabench binary. The child runs until the harness sees the end condition and sends
// SIGTERM; the harness waits for it by PID (bounded; SIGKILL after 45 s). CPU per record
// is the child's user+sys time (rusage, librdkafka's or sarama's threads included) over
// its whole life: start-up, join, the trial and the shutdown. max RSS is the child's peak
// RSS (VmHWM, sampled every 50 ms), so it holds the contestant alone, not the harness's
// admin client, probes, preload producer or reader (rusage's ru_maxrss would not: a child
// started with vfork inherits the harness's high-water mark). The summary also prints each binary's idle max RSS (run
// with -h: process start and package initialisation), the floor under its figures; this
// binary's is the larger, as it links the whole harness. Allocations are the child's Go
// heap allocations over its life (runtime.MemStats at exit). The latency mode still runs
// samsa and the baseline inside the harness (it needs the per-batch hook).
//
// # Throughput: output check
//
// After each trial (outside the measured window) a reader with no group reads the whole
// output topic and checks that every input key with the input value appears: missing,
// duplicate and corrupt (unknown key or wrong value) records are reported per trial. A
// trial with missing or corrupt records is marked FAILED, left out of the medians, and
// the harness exits 1 after the summary. Duplicates are allowed (at-least-once) and
// reported.
//
// The main comparison alternates the contestants trial by trial (B B2 S G B B2 S G ...;
// see -contestants) and prints, per contestant, the median and min-max of records/s and of
// max RSS, and the ratios of each samsa contestant to the stronger baseline and to goka
// (records/s, and max RSS against the target of at most 1.5x goka's). The tuning
// comparison alternates baseline and samsa for several consumer prefetch settings. The
// latency mode writes -latency-rate records/s for -latency-duration with a nanosecond
// timestamp in each value and reports, per record, the time from the moment the load
// producer handed it to librdkafka until a reader sees its copy in the output topic
// (acks=all, so it is acknowledged by then), and per batch the time from its oldest
// record's production until the batch reaches the handler; p50/p99 for both contestants.
//
// baseline-2g is the same loop with a second goroutine that produces the batches the poll
// goroutine hands it, so Poll and Produce overlap; which of the two shapes is faster depends
// on the prefetch settings and the machine, so both run and the ratio is taken against the
// stronger (by median). samsa-nocopy (not run by default) is samsa with input decoders that
// do not copy, to price codec.Bytes' copy.
//
// On a small machine the broker competes for the same CPUs, so a contestant's CPU per
// record costs it throughput twice.
//
// Profiles: -cpuprofile and -baseline-cpuprofile write a CPU profile of the last samsa or
// baseline trial of the main comparison (written by the child, from its start until it is
// told to stop), -memprofile allocation profiles at the start and at the stop of the last
// trial of each in-binary contestant. -throughput=false -tuning=false runs the latency
// mode alone.
//
// # Eos
//
// eos measures the processor's exactly-once throughput next to its at-least-once
// throughput in one run, at several transaction (commit) cadences, and prints the ratio.
//
// The input topic (-partitions partitions) is preloaded once with -records records:
// 12-byte keys and -value-size byte values. Every trial then runs a processor in this
// process with a fresh consumer group and a fresh output topic, an identity handler that
// Sends each record of the batch to the output (codec.Bytes on both sides), and the same
// Config except ExactlyOnce: at-least-once (idempotent producer, offsets committed
// asynchronously every CommitInterval after the outputs are acknowledged) or exactly-once
// (outputs and offsets in one transaction every CommitInterval, input read
// read_committed). A trial ends when the group's committed offsets equal the input's end
// offsets (polled every 50 ms through a consumer of the group that does not subscribe),
// the same end condition for both modes. records/s is -records over the time from the first batch handed to the handler
// until that end; the join before it (for exactly-once it includes InitTransactions) is
// printed separately. Trials alternate ALO, EOS, ALO, EOS... per cadence, so drift of a
// shared machine hits both modes alike; medians and the eos/alo ratio of the medians are
// printed per cadence (with min..max). The end is seen when a commit lands, so a trial
// also pays up to one CommitInterval after its last record, in both modes: with the
// default 500,000 records (a few seconds per trial on a small machine) that weighs on the
// 1s cadence; raise -records to shrink it. For exactly-once trials the number of transaction markers in the
// output (high watermarks minus records) is printed: about one per partition touched per
// transaction.
//
// With the single-node broker the launcher starts, topics have replication 1: the
// exactly-once cost measured is the transaction protocol's (AddPartitions, the offsets
// sent, EndTxn and the markers), not replication. Run against a three-node cluster with
// -brokers to include acks from replicas.
//
// # Mem
//
// mem checks the processor's documented memory budget (processor's package doc,
// "Memory") with a slow handler: it prints the resident memory of a processor working
// through a backlog next to the budget its configuration promises (`make bench-mem` runs
// it with its defaults; for example -duration 40s -max-buffered 0,16MiB,4MiB).
//
// The harness creates an input topic of -partitions partitions and preloads it with
// -records records (12-byte keys, -value-size byte values), spread evenly. For each
// MaxBufferedBytes in -max-buffered (default "0,16MiB": the library default, then 16 MiB)
// it starts a child process (this binary re-executed as "mem -child") that runs processor.New
// with codec.Bytes() on both sides, a fresh group reading from the beginning and a handler
// that sleeps 1 ms per record of its batch and then sends every record to a fresh output
// topic, for -duration; it then cancels the context and waits for Run to return. The
// child, not the harness (which holds the preload producer and an admin client), is what
// is measured.
//
// Every 250 ms the child samples VmRSS and VmHWM from /proc/self/status, Go's heap
// (runtime/metrics /memory/classes/heap/objects:bytes, live and not yet swept; also
// /gc/heap/live:bytes and /memory/classes/total:bytes), glibc's malloc in use and held
// from the OS (mallinfo2: librdkafka's C memory, which Go does not see) and the records
// handled.
// Peak RSS is the larger of the sampled VmRSS and the final VmHWM. The Go heap and C
// malloc figures tell which side a peak came from. The child also reads the processor's
// samsa.records.produced counter (an OTel SDK ManualReader; it counts a batch's outputs
// when the batch settles: all acknowledged, offset stored, batch released) to count the
// outputs in flight: the records behind the budget's in-flight term.
//
// The baseline is the peak RSS of an idle processor: the same child, against an empty
// topic of the same partition count, run for -idle-duration (long enough to join the
// group and be assigned every partition). It holds the Go runtime, librdkafka's
// threads and the partition workers, but no records.
//
// # Mem: the budget
//
// The budget is the one processor's package doc states ("Memory"), computed from the
// configuration each child actually used (defaults resolved as documented):
//
//	H' max(MaxBufferedBytes, partitions × 256 KiB)      (the default MaxBufferedBytes: at least partitions × 128 KiB)
//	held  2 H'                                          records held: fetched, handled, in flight
//	O     held                                          their outputs (the handler sends one same-sized output per input)
//	P  queued.max.messages.kbytes × 1024 + fetch.max.bytes   librdkafka's prefetch and its one-response overshoot
//	I  the idle processor's live Go heap                    (measured by the baseline child)
//	budget = 2 × (held + O + I) + 2 × (P + O) = 6 held + 2 P + 2 I
//
// Go side: once the partitions hold the budget together, a partition at its share holds
// the poll back, so records held stay below the budget plus what partitions below their
// share may add (2 H'), and at GOGC=100 the heap grows to about twice what is live
// before a collection. C side: librdkafka's prefetch and its copies of the outputs in
// flight, which glibc may keep resident up to about twice what is in use. The claim
// checked is peak RSS − baseline ≤ budget. The table also prints the peak number of
// outputs in flight (sent, batch not yet settled).
//
// # Mem: exit status
//
// This is a harness that prints figures, not a test: timings are never asserted. It
// exits 1 when the run itself fails (no broker, a topic cannot be created, a child
// crashes or its Run returns an error), and 3 when a configuration's peak RSS − baseline
// exceeds its budget, which is the claim it checks.
//
// # Concurrency
//
// concurrency measures key-ordered concurrency within a partition: a handler that waits
// -delay (10 ms) per record, as one calling a service does, over -partitions (8) and
// -keys (10,000) keys (key k in partition k mod partitions). Contestants, each with a
// fresh group over the same preloaded input, in turn within each of -trials rounds:
// ordered (Concurrency 1: a partition's records one after the other), key (Concurrency
// -concurrency, Ordering ByKey) and unordered (Concurrency -concurrency, Ordering
// Unordered). key and unordered run until every record is committed; ordered would take
// hours, so it runs -ordered-time and counts the records its handler finished (not
// committed: that would round down to whole batches of 10 s each, against it). records/s is from the
// first record handled to that end. All run in this process: CPU is its user+sys time
// over the trial, peak RSS its VmHWM (reset through /proc/self/clear_refs at the trial's
// start), Go memory the runtime's total minus released. It prints each ratio to ordered.
//
// # State
//
// state measures what exactly-once effects on a Redis table cost a processor: records/s
// with the checkpoint on (processor.WithCheckpoint(table), each batch written with
// table.Apply and its offsets) and off (the same handler writing the same sums with the
// table partition's plain PutMany, no checkpoint), in alternating trials of one run, and
// prints the ratio. It uses the Redis at -redis ($REDIS_ADDR), else starts a redis-server.
//
// The input topic (-partitions partitions, replication 1) is preloaded once with -records
// records: keys "b%05d" over -keys distinct keys (partition = key index mod partitions),
// 8-byte int64 values. Every trial consumes the whole topic from the beginning with a fresh
// consumer group into a fresh table namespace. The handler (the same code in both modes)
// reads the current sums of the batch's keys with one MGET (table.Partition(p).GetMany),
// adds the batch, and writes the new sums:
//
//   - on:  table.Apply(ctx, p, puts, nil, b.NextOffsets()) — one Lua script writing the
//     sums and the partition's applied offset atomically — and the processor runs with
//     processor.WithCheckpoint(table) (one HGET per partition on assignment).
//   - off: table.Partition(p).PutMany(ctx, puts) — one MSET — and no checkpoint.
//
// records/s is -records over the time from the first batch handed to the handler until
// the handler has seen every record ("handled"), and until the group's committed offsets
// equal the end offsets, polled every 50 ms ("committed"). After each trial the sums are
// checked (Σ sums and Σ counts over every key equal the input's) and the namespace is
// deleted. Trials alternate on, off, on, off, ...; the figures are medians per mode and
// ratio = on / off, also taken per adjacent (on, off) pair. CPU per record is this
// process's user+sys time (librdkafka's threads included) and redis-server's (INFO cpu)
// over the trial, divided by -records. Redis runs on the same machine as Kafka and the processor: on a small
// machine all three compete for the CPUs.
//
// # Soak
//
// soak runs one processor for a long time at a steady input rate with tracing and metrics
// on, and samples its resident memory, goroutines and lag, to show whether anything
// grows. It prints one line per sample and a summary of growth after the warm-up; it
// asserts nothing (a figure, not a test). `make soak` runs it for 30 minutes on the
// stack, with Jaeger. Spans go to $OTEL_EXPORTER_OTLP_ENDPOINT (Jaeger) when it is set;
// otherwise every span is still recorded by the OTel SDK and handed to a batching
// exporter that drops it, so tracing costs what it would. Metrics are the Prometheus
// provider of package metrics, served on 127.0.0.1; the sampler scrapes that endpoint
// over HTTP, as Prometheus would: process_resident_memory_bytes, go_goroutines,
// go_memstats_heap_inuse_bytes, go_memstats_sys_bytes, go_memstats_heap_released_bytes,
// samsa_records_consumed_total and samsa_consumer_lag. The Go runtime's mapped memory
// (sys minus what it released to the OS; it may include reserved pages never touched, so
// it is an upper bound of the Go share of RSS) is printed beside RSS, and RSS minus it
// bounds from below what lies outside the Go runtime (librdkafka and other C
// allocations, the binary), so growth can be told apart.
//
// # Soak: what the summary says
//
// RSS and goroutines at the end of the warm-up (-warmup, default a third of the
// duration, at most 10 minutes) and at the end, their maxima after the warm-up, and the RSS slope after it
// and over the second half of it (least squares, MiB per hour: a short run's first slope
// still includes the climb to the working set); records produced and consumed and the
// final lag.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	scenario, args := "throughput", os.Args[1:]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		scenario, args = args[0], args[1:]
	}
	switch scenario {
	case "throughput":
		os.Exit(throughputMain(args))
	case "eos":
		os.Exit(eosMain(args))
	case "mem":
		os.Exit(memMain(args))
	case "state":
		os.Exit(stateMain(args))
	case "soak":
		os.Exit(soakMain(args))
	case "concurrency":
		os.Exit(concurrencyMain(args))
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

// runScenario runs f with a context that ends on SIGINT or SIGTERM and returns the exit
// status: 0, the exitError's code, else 1 with the error on stderr.
func runScenario(f func(ctx context.Context) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := f(ctx)
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
func usageError(scenario string, err error) int {
	fmt.Fprintf(os.Stderr, "bench %s: %v\n", scenario, err)
	return 2
}
