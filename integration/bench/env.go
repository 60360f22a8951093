package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/samsa-go/samsa/integration/stack"
)

// env is the broker side of a throughput run: the admin, the preloaded input topic and
// its end offsets.
type env struct {
	o       options
	adm     *admin
	in      string
	ends    []int64 // per input partition, after preload
	self    string  // this binary, re-executed with -child for each trial
	gokaBin string  // the gokabench binary; empty unless goka is a contestant
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
	telemetry      string // samsa-otel, -trace, -trace1 or -metrics without the samsa- prefix
	header         bool   // every output carries a constant traceparent-sized header (no tracing)
	first          *firstMark
	// onBatch, when set, is called with the batch's values when it reaches user code
	// (latency mode). It must be fast.
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

// contestants are the names -contestants takes (its help says what each is). Every one
// but goka (the gokabench binary) runs in this binary; samsa-before runs samsa as the
// -before binary (this harness built from an earlier commit) has it.
var contestants = []string{cLoop, "loop-hdr", cBaseline, "baseline-2g", cSamsa, cBefore, "samsa-nocopy",
	"samsa-otel", "samsa-trace", "samsa-trace1", "samsa-metrics", "samsa-hdr", cGoka}

// runContestant runs the in-binary contestant name until ctx is cancelled.
func runContestant(ctx context.Context, name string, r run) error {
	r.header = strings.HasSuffix(name, "-hdr")
	switch name {
	case cBaseline:
		return runBaseline(ctx, r, false, nil, nil)
	case "baseline-2g":
		return runBaseline(ctx, r, true, nil, nil)
	case cLoop, "loop-hdr":
		return runLoop(ctx, r)
	case "samsa-nocopy":
		r.codec = "nocopy"
	case "samsa-otel", "samsa-trace", "samsa-trace1", "samsa-metrics":
		r.telemetry = strings.TrimPrefix(name, "samsa-")
	}
	return runSamsa(ctx, r)
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
func (e *env) trial(ctx context.Context, name string, v variant, prof profiles) (result, error) {
	out := stack.UniqueName("bench-out")
	if err := e.adm.createTopic(ctx, out, e.o.partitions); err != nil {
		return result{}, err
	}
	defer e.adm.deleteTopics(out)
	group := stack.UniqueName("bench-" + name)
	path, args := e.gokaBin, e.gokaArgs(group, out, e.o.commitInterval)
	if name != cGoka {
		child, self := name, e.self
		if name == cBefore {
			child, self = cSamsa, e.o.before
		}
		buffer := e.o.samsaBuffer
		if v.buffer != 0 {
			buffer = v.buffer
		}
		spec, err := json.Marshal(childSpec{
			Contestant: child, Brokers: e.o.brokers, Group: group, In: e.in, Out: out,
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
	ch, err := startChild(name, nil, path, args...)
	if err != nil {
		return result{}, err
	}
	defer ch.kill()

	probe, err := newOffsetProbe(e.o.brokers, group, e.in, e.ends)
	if err != nil {
		return result{}, err
	}
	defer probe.close()
	err = probe.await(ctx, 50*time.Millisecond, start.Add(e.o.trialTimeout), ch.done)
	end := time.Now()
	if err != nil {
		err = fmt.Errorf("%s (pid %d), -trial-timeout %s: %w", name, ch.pid(), e.o.trialTimeout, err)
	}
	stopErr := ch.stop(45 * time.Second) // carries the child's stderr
	if err = errors.Join(err, stopErr); err != nil {
		if stopErr == nil {
			err = fmt.Errorf("%w%s", err, ch.stderr.suffix())
		}
		return result{}, err
	}
	firstNS := ch.first.Load()
	if firstNS == 0 {
		return result{}, fmt.Errorf("%s (pid %d) never reported its first record", name, ch.pid())
	}
	first := time.Unix(0, firstNS)
	cpu, rss := ch.usage()
	res := result{
		contestant: name, variant: v.name, records: int64(e.o.records),
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
