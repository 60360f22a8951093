package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/samsa-go/samsa/integration/stack"
)

// env is the broker side of a throughput run: the admin, the preloaded input topic and
// its end offsets. The admin belongs to the caller.
type env struct {
	o   options
	adm *admin
	// probes read committed offsets, one per group.
	probes  map[string]*offsetProbe
	in      string
	ends    []int64 // per input partition, after preload
	self    string  // this binary, re-executed with -child for each trial
	gokaBin string  // the gokabench binary; empty unless goka is a contestant
}

func newEnv(o options, adm *admin, in string) (*env, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this binary to re-execute per trial: %w", err)
	}
	return &env{o: o, adm: adm, in: in, self: self, probes: map[string]*offsetProbe{}}, nil
}

func (e *env) close() {
	for _, p := range e.probes {
		p.close()
	}
}

// preload writes the input records with a producer tuned for bulk loading.
func (e *env) preload(ctx context.Context) (took time.Duration, err error) {
	took, e.ends, err = e.o.preloadInput(ctx, e.in, bulkProducer())
	return took, err
}

// committedSum returns the sum of the group's committed offsets on the input and whether
// every partition reached its end offset, through one probe per group kept for the run.
func (e *env) committedSum(ctx context.Context, group string) (int64, bool) {
	p := e.probes[group]
	if p == nil {
		var err error
		if p, err = newOffsetProbe(e.o.brokers, group, e.in, e.ends); err != nil {
			return 0, false
		}
		e.probes[group] = p
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	return p.committed(timeout)
}

// run is one contestant running on one input/output pair until ctx is cancelled.
type run struct {
	brokers        string
	group          string
	in, out        string
	batch          int
	batchWait      time.Duration
	commitInterval time.Duration
	consumer       map[string]any
	producer       map[string]any
	codec          string
	buffer         int64
	otel           bool    // tracing (SDK, every span sampled) and Prometheus metrics on
	traceAll       bool    // tracing only (SDK, every span sampled), metrics off
	otelRatio      float64 // tracing only, sampled by ParentBased(TraceIDRatioBased(otelRatio))
	metricsOnly    bool    // Prometheus metrics on, tracing off
	header         bool    // every output carries a constant traceparent-sized header (no tracing)
	first          *firstMark
	// onBatch, when set, is called with the batch's records' values when it reaches user
	// code (latency mode). It must be fast.
	onBatch func(values [][]byte)
}

// Contestant names the harness refers to.
const (
	cSamsa    = "samsa"
	cBaseline = "baseline"
	cLoop     = "loop"
	cGoka     = "goka"
	cBefore   = "samsa-before"
)

// contestant is one side of the comparison. run is nil for contestants that are separate
// binaries (goka), which the harness starts itself.
type contestant struct {
	name string
	run  func(ctx context.Context, r run) error
}

// findContestant returns the contestant called name:
//
//   - samsa; samsa-before: samsa as built into the -before binary (this harness built
//     from an earlier commit, for a before/after comparison in one interleaved run).
//   - baseline; baseline-2g: it hands full batches to a second goroutine that produces
//     them; loop: the baseline at its own fastest settings (see runLoop).
//   - samsa-nocopy: samsa with decoders that do not copy (see noCopy).
//   - samsa-otel: samsa with tracing and metrics on (an SDK tracer provider sampling
//     every span into a batch processor exported nowhere, and the Prometheus provider).
//     samsa-trace (tracing only, every span sampled), samsa-trace1 (tracing at a
//     parent-based 1% ratio sampler), samsa-metrics (metrics only) and samsa-hdr (a
//     traceparent-sized header on every output, tracing off: the bytes and the per-record
//     header copies without spans) split that cost.
//   - loop-hdr: the loop writing samsa-hdr's header on every output: what carrying a W3C
//     trace header per record costs any client, whatever frames it.
//   - goka: the gokabench binary (integration/gokabench, its own module).
func findContestant(name string) (contestant, bool) {
	with := func(f func(context.Context, run) error, set func(*run)) func(context.Context, run) error {
		return func(ctx context.Context, r run) error {
			set(&r)
			return f(ctx, r)
		}
	}
	c := contestant{name: name}
	switch name {
	case cSamsa, cBefore:
		c.run = runSamsa
	case cBaseline:
		c.run = runBaseline
	case "baseline-2g":
		c.run = runBaseline2G
	case cLoop:
		c.run = runLoop
	case "loop-hdr":
		c.run = with(runLoop, func(r *run) { r.header = true })
	case "samsa-nocopy":
		c.run = with(runSamsa, func(r *run) { r.codec = "nocopy" })
	case "samsa-otel":
		c.run = with(runSamsa, func(r *run) { r.otel = true })
	case "samsa-trace":
		c.run = with(runSamsa, func(r *run) { r.traceAll = true })
	case "samsa-trace1":
		c.run = with(runSamsa, func(r *run) { r.otelRatio = 0.01 })
	case "samsa-metrics":
		c.run = with(runSamsa, func(r *run) { r.metricsOnly = true })
	case "samsa-hdr":
		c.run = with(runSamsa, func(r *run) { r.header = true })
	case cGoka:
	default:
		return c, false
	}
	return c, true
}

// named returns the contestant called name, one of the constants above.
func named(name string) contestant {
	c, _ := findContestant(name)
	return c
}

// firstMark records the first time user code received a batch; notify, when set, is
// called once with that time.
type firstMark struct {
	ns     atomic.Int64
	notify func(time.Time)
}

func (f *firstMark) mark() {
	if f.ns.Load() == 0 {
		now := time.Now()
		if f.ns.CompareAndSwap(0, now.UnixNano()) && f.notify != nil {
			f.notify(now)
		}
	}
}

type result struct {
	contestant string
	variant    string
	trial      int
	records    int64
	join       time.Duration // child start -> first batch in user code
	steady     time.Duration // first batch -> everything committed
	cpu        time.Duration // the child's user+sys over its whole life
	rss        int64         // the child's max RSS, bytes
	mallocs    uint64        // the child's Go heap allocations over its whole life
	allocBytes uint64
	gcs        uint32
	goPeak     int64 // the most the child's Go runtime held from the OS (sampled); 0: not reported
	verdict
}

func (r result) rate() float64            { return float64(r.records) / r.steady.Seconds() }
func (r result) cpuPerRecord() float64    { return float64(r.cpu.Microseconds()) / float64(r.records) }
func (r result) allocsPerRecord() float64 { return float64(r.mallocs) / float64(r.records) }
func (r result) bytesPerRecord() float64  { return float64(r.allocBytes) / float64(r.records) }
func (r result) rssMiB() float64          { return float64(r.rss) / (1 << 20) }

func (r result) line() string {
	check := "verified"
	if !r.ok() {
		check = "FAILED"
	}
	return fmt.Sprintf("%-12s %-11s #%d  %8.0f records/s  (%.2fs after a %.2fs join; cpu %.2f us/rec, max RSS %.0f MiB (Go %.0f), %.1f allocs/rec, %.0f B/rec, %d GCs; output %d: %s, %d missing, %d dups, %d corrupt)",
		r.contestant, r.variant, r.trial, r.rate(), r.steady.Seconds(), r.join.Seconds(), r.cpuPerRecord(), r.rssMiB(), float64(r.goPeak)/(1<<20), r.allocsPerRecord(),
		r.bytesPerRecord(), r.gcs, r.output, check, r.missing, r.dups, r.corrupt)
}

// profiles names the profiles to write around a trial; empty: none.
type profiles struct{ cpu, mem, block string }

// trial runs one contestant in a child process over the whole input with a fresh group
// and output topic, stops it once the group's committed offsets reach the input's end
// offsets, and then reads the output back (see verify).
func (e *env) trial(ctx context.Context, c contestant, v variant, prof profiles) (result, error) {
	out := stack.UniqueName("bench-out")
	if err := e.adm.createTopic(ctx, out, e.o.partitions); err != nil {
		return result{}, err
	}
	defer e.adm.deleteTopics(out)
	group := stack.UniqueName("bench-" + c.name)
	path, args := e.gokaBin, e.gokaArgs(group, out, e.o.commitInterval)
	if c.run != nil {
		name, self := c.name, e.self
		if c.name == cBefore {
			name, self = cSamsa, e.o.before
		}
		buffer := e.o.samsaBuffer
		if v.buffer != 0 {
			buffer = v.buffer
		}
		spec, err := json.Marshal(childSpec{
			Contestant: name, Brokers: e.o.brokers, Group: group, In: e.in, Out: out,
			Batch: e.o.batch, BatchWait: e.o.batchWait, CommitInterval: e.o.commitInterval,
			Consumer: stringMap(mergeAny(e.o.consumer, v.consumer)), Producer: stringMap(mergeAny(e.o.producer)),
			Codec: e.o.samsaCodec, Buffer: buffer, CPUProfile: prof.cpu, MemProfile: prof.mem, BlockProfile: prof.block,
		})
		if err != nil {
			return result{}, err
		}
		path, args = self, []string{"-child", string(spec)}
	}
	start := time.Now()
	ch, err := startChild(c.name, nil, path, args...)
	if err != nil {
		return result{}, err
	}
	defer ch.kill()

	deadline := time.NewTimer(e.o.trialTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var end time.Time
	var runErr error
wait:
	for {
		select {
		case <-tick.C:
			if _, all := e.committedSum(ctx, group); all {
				end = time.Now()
				break wait
			}
		case <-ch.done:
			runErr = ch.exitErr()
			if runErr == nil {
				runErr = fmt.Errorf("%s (pid %d) exited before committing everything%s", c.name, ch.pid(), ch.stderr.suffix())
			}
			break wait
		case <-deadline.C:
			sum, _ := e.committedSum(ctx, group)
			runErr = fmt.Errorf("timed out after %s with %d of %d records committed%s", e.o.trialTimeout, sum, e.o.records, ch.stderr.suffix())
			break wait
		case <-ctx.Done():
			runErr = ctx.Err()
			break wait
		}
	}
	if err := ch.stop(45 * time.Second); runErr == nil {
		runErr = err
	}
	if runErr != nil {
		return result{}, runErr
	}
	firstNS := ch.first.Load()
	if firstNS == 0 {
		return result{}, fmt.Errorf("%s (pid %d) never reported its first record", c.name, ch.pid())
	}
	first := time.Unix(0, firstNS)
	cpu, rss := ch.usage()
	res := result{
		contestant: c.name, variant: v.name, records: int64(e.o.records),
		join: first.Sub(start), steady: end.Sub(first), cpu: cpu, rss: rss,
	}
	if m, ok := ch.memStats(); ok {
		res.mallocs, res.allocBytes, res.gcs, res.goPeak = m[0], m[1], uint32(m[2]), int64(m[3])
	}
	if res.verdict, err = e.verify(ctx, out); err != nil {
		return result{}, fmt.Errorf("verify output: %w", err)
	}
	return res, nil
}
