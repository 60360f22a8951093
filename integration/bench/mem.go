package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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

type memOptions struct {
	input
	duration, idleDuration               time.Duration
	maxBuffered                          []int64
	batchSize, maxInFlight, queuedKBytes int
}

// memMain runs the mem scenario and returns the exit code: 3 when a configuration's peak
// RSS − baseline exceeds its budget.
func memMain(args []string) int {
	var childJSON string
	var o memOptions
	var maxBuffered string
	fs := o.flagSet("mem", 300000, 64, 1024)
	fs.StringVar(&childJSON, "child", "", "internal: run one measured processor (JSON spec) and print its figures")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "how long each measured processor runs before it is cancelled")
	fs.DurationVar(&o.idleDuration, "idle-duration", 15*time.Second, "how long the idle processor (the baseline) runs")
	fs.StringVar(&maxBuffered, "max-buffered", "0,16MiB", "comma-separated MaxBufferedBytes, one measured run each (0: the library default, 4 MiB); units B, KiB, MiB, GiB")
	fs.IntVar(&o.batchSize, "batch-size", 0, "Config.BatchSize (0: the library default, 1000)")
	fs.IntVar(&o.maxInFlight, "max-in-flight", 0, "Config.MaxInFlightBatches (0: the library default, 8)")
	fs.IntVar(&o.queuedKBytes, "queued-kbytes", 0, "queued.max.messages.kbytes through ConsumerOverrides (0: samsa's default, 32768)")
	fs.Parse(args)
	if childJSON != "" {
		return memChild(childJSON)
	}
	for _, s := range splitList(maxBuffered) {
		n, err := parseSize(s)
		if err != nil {
			return o.usageError(fmt.Errorf("-max-buffered: %w", err))
		}
		o.maxBuffered = append(o.maxBuffered, n)
	}
	if o.partitions < 1 || o.records < 1 || o.valueSize < 0 {
		return o.usageError(fmt.Errorf("-partitions and -records must be positive, -value-size not negative"))
	}
	return o.run(func(ctx context.Context) (*summary, error) { return memRun(ctx, o) })
}

func memRun(ctx context.Context, o memOptions) (*summary, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this binary to re-execute as the child: %w", err)
	}
	in, idle := stack.UniqueName("membench-in"), stack.UniqueName("membench-idle")
	a, broker, done, err := o.setUp(ctx, "", 1, in, idle)
	if err != nil {
		return nil, err
	}
	defer done()
	fmt.Printf("broker: %s\npreloading %d records (%d partitions, %d-byte values, %d-byte keys) into %s...\n",
		broker, o.records, o.partitions, o.valueSize, keySize, in)
	took, _, err := o.preloadInput(ctx, in, bulkProducer())
	if err != nil {
		return nil, err
	}
	fmt.Printf("preloaded in %.1fs\n", took.Seconds())

	spec := memSpec{
		Brokers: o.brokers, Records: o.records, BatchSize: o.batchSize,
		MaxInFlight: o.maxInFlight, QueuedKBytes: o.queuedKBytes,
	}
	// measure runs spec against in (its own group and output topic) for d.
	measure := func(spec memSpec, in string, d time.Duration) (memResult, error) {
		spec.In, spec.Duration = in, d
		spec.Group, spec.Out = stack.UniqueName("membench"), stack.UniqueName("membench-out")
		if err := a.createTopic(ctx, spec.Out, o.partitions); err != nil {
			return memResult{}, err
		}
		return runMemChild(ctx, self, spec)
	}

	fmt.Printf("\nbaseline: idle processor on the empty topic %s for %s\n", idle, o.idleDuration)
	is := spec
	is.Records = 0
	base, err := measure(is, idle, o.idleDuration)
	if err != nil {
		return nil, fmt.Errorf("idle child: %w", err)
	}
	fmt.Printf("  idle: peak RSS %s MiB (Go heap %s MiB, C malloc %s MiB)\n", mib(base.PeakRSS), mib(base.PeakHeap), cmib(base.PeakCMalloc))

	var rows []memRow
	for _, mbb := range o.maxBuffered {
		s := spec
		s.MaxBufferedBytes = mbb
		b := newBudget(o, mbb, base.PeakLiveHeap)
		fmt.Printf("\n%s: running for %s (%s)\n", b.name, o.duration, b.terms())
		res, err := measure(s, in, o.duration)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.name, err)
		}
		r := memRow{budget: b, res: res, baseline: base.PeakRSS}
		fmt.Println("  " + r.detail())
		rows = append(rows, r)
	}

	sum := &summary{about: []string{"broker: " + broker, fmt.Sprintf(
		"config: %d records, %d partitions, %d-byte values; handler sleeps 1 ms per record; each run %s, idle %s",
		o.records, o.partitions, o.valueSize, o.duration, o.idleDuration)}}
	t := sum.table("peak memory against the documented budget:", "config", "peak RSS", "peak Go heap", "peak C malloc",
		"baseline", "RSS-baseline", "held+prefetch", "budget", "within", "peak in flight")
	exceeded := false
	for _, r := range rows {
		within := "yes"
		if !r.within() {
			within, exceeded = "NO", true
		}
		t.add(r.budget.name, mib(r.res.PeakRSS), mib(r.res.PeakHeap), cmib(r.res.PeakCMalloc), mib(r.baseline),
			mib(r.res.PeakRSS-r.baseline), mib(r.budget.held+r.budget.prefetch), mib(r.budget.total()), within,
			r.res.PeakInFlight)
	}
	t.note("MiB; budget = 6 × held + 2 × prefetch + 2 × idle live heap (see the package doc); Go heap = runtime/metrics heap objects (live + not yet swept); C malloc = glibc mallinfo2 in use (librdkafka); in flight = outputs sent, batch not yet settled (records)")
	if exceeded {
		return sum, exitError{3, errors.New("mem: peak RSS − baseline exceeded the documented budget")}
	}
	return sum, nil
}

// budget is the documented memory budget of one configuration, in bytes.
type budget struct {
	name                 string
	held, prefetch, idle int64
}

func newBudget(o memOptions, maxBuffered, idleHeap int64) budget {
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

type memRow struct {
	budget   budget
	res      memResult
	baseline int64
}

func (r memRow) within() bool { return r.res.PeakRSS-r.baseline <= r.budget.total() }

func (r memRow) detail() string {
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
