// Command membench checks the processor's documented memory budget (processor's package
// doc, "Memory") on a real Kafka broker with a slow handler: it prints the resident memory
// of a processor working through a backlog next to the budget its configuration promises.
//
// Usage (starts a single-node Kafka with integration/stack unless $KAFKA_BROKERS or
// -brokers names one; `make bench-mem` runs the first line):
//
//	go run ./integration/membench
//	go run ./integration/membench -duration 40s -max-buffered 0,16MiB,4MiB
//	go run ./integration/membench -partitions 64 -records 300000 -value-size 1024
//
// # What is measured
//
// The harness creates an input topic of -partitions partitions and preloads it with
// -records records (12-byte keys, -value-size byte values), spread evenly. For each
// MaxBufferedBytes in -max-buffered (default "0,16MiB": the library default, then 16 MiB)
// it starts a child process (this binary re-executed with -child) that runs processor.New
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
// # The budget
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
// # Exit status
//
// This is a harness that prints figures, not a test: timings are never asserted. It
// exits 1 when the run itself fails (no broker, a topic cannot be created, a child
// crashes or its Run returns an error), and 3 when a configuration's peak RSS − baseline
// exceeds its budget, which is the claim it checks.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/samsa-go/samsa/integration/stack"
)

// Documented defaults (processor.Config and the package doc's "Memory" section), used to
// compute the budget when a flag leaves the library's default in place.
const (
	defaultMaxBufferedBytes = 4 << 20
	minPartitionShare       = 256 << 10
	perPartitionBudget      = 128 << 10
	defaultBatchSize        = 1000
	defaultMaxInFlight      = 8
	recordOverhead          = 128 // per record, as MaxBufferedBytes counts it
	keySize                 = 12  // see key()
)

type options struct {
	brokers      string
	partitions   int
	records      int
	valueSize    int
	duration     time.Duration
	idleDuration time.Duration
	maxBuffered  []int64
	batchSize    int
	maxInFlight  int
	queuedKBytes int
}

func main() {
	var childJSON string
	var o options
	var maxBuffered string
	fs := flag.CommandLine
	fs.StringVar(&childJSON, "child", "", "internal: run one measured processor (JSON spec) and print its figures")
	fs.StringVar(&o.brokers, "brokers", os.Getenv(stack.EnvKafkaBrokers), "bootstrap servers of a running Kafka (default $KAFKA_BROKERS); empty: start a single-node Kafka")
	fs.IntVar(&o.partitions, "partitions", 64, "input (and output) topic partitions")
	fs.IntVar(&o.records, "records", 300000, "records preloaded into the input topic")
	fs.IntVar(&o.valueSize, "value-size", 1024, "bytes per value")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "how long each measured processor runs before it is cancelled")
	fs.DurationVar(&o.idleDuration, "idle-duration", 15*time.Second, "how long the idle processor (the baseline) runs")
	fs.StringVar(&maxBuffered, "max-buffered", "0,16MiB", "comma-separated MaxBufferedBytes, one measured run each (0: the library default, 4 MiB); units B, KiB, MiB, GiB")
	fs.IntVar(&o.batchSize, "batch-size", 0, "Config.BatchSize (0: the library default, 1000)")
	fs.IntVar(&o.maxInFlight, "max-in-flight", 0, "Config.MaxInFlightBatches (0: the library default, 8)")
	fs.IntVar(&o.queuedKBytes, "queued-kbytes", 0, "queued.max.messages.kbytes through ConsumerOverrides (0: samsa's default, 32768)")
	flag.Parse()
	if childJSON != "" {
		os.Exit(childMain(childJSON))
	}
	for _, s := range strings.Split(maxBuffered, ",") {
		n, err := parseSize(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintln(os.Stderr, "membench: -max-buffered:", err)
			os.Exit(2)
		}
		o.maxBuffered = append(o.maxBuffered, n)
	}
	if o.partitions < 1 || o.records < 1 || o.valueSize < 0 {
		fmt.Fprintln(os.Stderr, "membench: -partitions and -records must be positive, -value-size not negative")
		os.Exit(2)
	}
	os.Exit(run(o))
}

// run returns the exit code, after its deferred clean-ups (the Kafka node, the topics).
func run(o options) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "membench:", err)
		return 1
	}
	broker := "external: " + o.brokers
	if o.brokers == "" {
		fmt.Println("starting a single-node Kafka (stack.StartKafka)...")
		sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		k, err := stack.StartKafka(sctx, stack.KafkaOptions{})
		cancel()
		if err != nil {
			return fail(err)
		}
		pid := k.PID(1)
		defer func() {
			if err := k.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "membench: stop kafka:", err)
			}
			fmt.Printf("stopped the Kafka node started for this run (pid %d)\n", pid)
		}()
		o.brokers = k.Bootstrap()
		broker = fmt.Sprintf("single node started by stack.StartKafka (pid %d)", pid)
	}
	self, err := os.Executable()
	if err != nil {
		return fail(fmt.Errorf("find this binary to re-execute as the child: %w", err))
	}
	a, err := newAdmin(o.brokers)
	if err != nil {
		return fail(err)
	}
	defer a.close()

	in, idle := stack.UniqueName("membench-in"), stack.UniqueName("membench-idle")
	for _, t := range []string{in, idle} {
		if err := a.createTopic(ctx, t, o.partitions); err != nil {
			return fail(err)
		}
	}
	fmt.Printf("broker: %s\npreloading %d records (%d partitions, %d-byte values, %d-byte keys) into %s...\n",
		broker, o.records, o.partitions, o.valueSize, keySize, in)
	took, err := a.preload(ctx, in, o.partitions, o.records, o.valueSize)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("preloaded in %.1fs\n", took.Seconds())

	spec := childSpec{
		Brokers: o.brokers, Records: o.records, BatchSize: o.batchSize,
		MaxInFlight: o.maxInFlight, QueuedKBytes: o.queuedKBytes,
	}

	fmt.Printf("\nbaseline: idle processor on the empty topic %s for %s\n", idle, o.idleDuration)
	is := spec
	is.In, is.Group, is.Duration, is.Records = idle, stack.UniqueName("membench-idle"), o.idleDuration, 0
	is.Out = stack.UniqueName("membench-idle-out")
	if err := a.createTopic(ctx, is.Out, o.partitions); err != nil {
		return fail(err)
	}
	base, err := runChild(ctx, self, is)
	if err != nil {
		return fail(fmt.Errorf("idle child: %w", err))
	}
	fmt.Printf("  idle: peak RSS %s MiB (Go heap %s MiB, C malloc %s MiB)\n", mib(base.PeakRSS), mib(base.PeakHeap), cmib(base.PeakCMalloc))

	var rows []row
	for _, mbb := range o.maxBuffered {
		s := spec
		s.In, s.Group, s.Duration, s.MaxBufferedBytes = in, stack.UniqueName("membench"), o.duration, mbb
		s.Out = stack.UniqueName("membench-out")
		if err := a.createTopic(ctx, s.Out, o.partitions); err != nil {
			return fail(err)
		}
		b := newBudget(o, mbb, base.PeakLiveHeap)
		fmt.Printf("\n%s: running for %s (%s)\n", b.name, o.duration, b.terms())
		res, err := runChild(ctx, self, s)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", b.name, err))
		}
		r := row{budget: b, res: res, baseline: base.PeakRSS}
		fmt.Println("  " + r.detail())
		rows = append(rows, r)
	}

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\tpeak RSS\tpeak Go heap\tpeak C malloc\tbaseline\tRSS-baseline\theld+prefetch\tbudget\twithin\tpeak in flight\t")
	exceeded := false
	for _, r := range rows {
		within := "yes"
		if !r.within() {
			within, exceeded = "NO", true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", r.budget.name, mib(r.res.PeakRSS), mib(r.res.PeakHeap),
			cmib(r.res.PeakCMalloc), mib(r.baseline), mib(r.res.PeakRSS-r.baseline), mib(r.budget.held+r.budget.prefetch),
			mib(r.budget.total()), within, r.res.PeakInFlight)
	}
	tw.Flush()
	fmt.Println("MiB; budget = 6 × held + 2 × prefetch + 2 × idle live heap (see the package doc); Go heap = runtime/metrics heap objects (live + not yet swept); C malloc = glibc mallinfo2 in use (librdkafka); in flight = outputs sent, batch not yet settled (records)")
	if exceeded {
		fmt.Fprintln(os.Stderr, "membench: peak RSS − baseline exceeded the documented budget")
		return 3
	}
	return 0
}

// budget is the documented memory budget of one configuration, in bytes.
type budget struct {
	name                 string
	held, prefetch, idle int64
}

func newBudget(o options, maxBuffered, idleHeap int64) budget {
	var b budget
	b.name = "MaxBufferedBytes=" + mib(maxBuffered) + "MiB"
	h := maxBuffered
	if maxBuffered == 0 {
		maxBuffered = defaultMaxBufferedBytes
		h = max(maxBuffered, int64(o.partitions)*perPartitionBudget)
		b.name = "MaxBufferedBytes=default(4MiB)"
	}
	// H' = max(H, partitions × 256 KiB), H = MaxBufferedBytes (the default: at least
	// partitions × 128 KiB); the records held stay below 2 H', and the 1:1 handler's
	// outputs of them below as much.
	b.held = 2 * max(h, int64(o.partitions)*minPartitionShare)
	queued := o.queuedKBytes
	if queued == 0 {
		queued = int(max(maxBuffered/2, 1<<20) >> 10)
	}
	b.prefetch = int64(queued)*1024 + fetchMaxBytes
	b.idle = idleHeap
	return b
}

// fetchMaxBytes is librdkafka's fetch.max.bytes, which the processor leaves at its
// default: the prefetch queue may be overshot by one fetch response of that size.
const fetchMaxBytes = 52428800

// total is 2 × (held + outputs + idle) + 2 × (prefetch + outputs), outputs = held.
func (b budget) total() int64 { return 6*b.held + 2*b.prefetch + 2*b.idle }

func (b budget) terms() string {
	return fmt.Sprintf("budget %s MiB = 6 × held %s + 2 × prefetch %s + 2 × idle live heap %s",
		mib(b.total()), mib(b.held), mib(b.prefetch), mib(b.idle))
}

type row struct {
	budget   budget
	res      childResult
	baseline int64
}

func (r row) within() bool { return r.res.PeakRSS-r.baseline <= r.budget.total() }

func (r row) detail() string {
	drained := "not all records handled"
	if r.res.AllHandledAfter > 0 {
		drained = fmt.Sprintf("all handled %.1fs after the first batch", r.res.AllHandledAfter.Seconds())
	}
	return fmt.Sprintf("handled %d records (%s); first batch settled %.2fs after the first batch; peak %d outputs in flight (sent, batch not settled) at %.1fs\n  peak RSS %s MiB at %.1fs (RSS at the first batch %s MiB); Go: peak heap %s MiB, peak live heap %s MiB, peak mapped %s MiB; C: peak malloc in use %s MiB, peak held %s MiB",
		r.res.Handled, drained, r.res.FirstSettledAfter.Seconds(), r.res.PeakInFlight, r.res.PeakInFlightAt.Seconds(), mib(r.res.PeakRSS), r.res.PeakRSSAt.Seconds(), mib(r.res.RSSAtFirstBatch),
		mib(r.res.PeakHeap), mib(r.res.PeakLiveHeap), mib(r.res.PeakGoMapped), cmib(r.res.PeakCMalloc), cmib(r.res.PeakCHeld))
}

// cmib is mib for a C malloc figure, which may be unknown (-1).
func cmib(n int64) string {
	if n < 0 {
		return "n/a"
	}
	return mib(n)
}

func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) }

// parseSize reads "0", "16777216", "512KiB", "16MiB", "1GiB".
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB or GiB)", s)
	}
	return n * mult, nil
}
