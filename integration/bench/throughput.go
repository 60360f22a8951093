package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/integration/stack"
)

type options struct {
	input
	trials         int
	batch          int
	batchWait      time.Duration
	commitInterval time.Duration
	consumer       kvFlag
	producer       kvFlag
	samsaCodec     string
	contestants    string
	before         string
	samsaBuffer    int64

	throughput   bool
	tuning       bool
	tuningTrials int
	budgetCurve  string
	budgetTrials int
	variants     string

	latency         bool
	latencyRate     int
	latencyDuration time.Duration
	latencyWarmup   time.Duration
	latencyCommit   time.Duration
	latencyRounds   int

	cpuProfile         string
	cpuProfileOf       string
	blockProfile       string
	baselineCPUProfile string
	memProfile         string
	checkConfig        bool
	trialTimeout       time.Duration
	kafkaVersion       string
	gokaCompression    string

	child string // -child: run one trial (JSON childSpec) in this process and exit
}

// throughputMain runs the throughput scenario (the default) and returns the exit code.
func throughputMain(args []string) int {
	var o options
	flag := o.flagSet("throughput", 1_000_000, 8, 100)
	flag.IntVar(&o.trials, "trials", 3, "trials per contestant in the main comparison (alternating baseline, samsa)")
	flag.IntVar(&o.batch, "batch", 1000, "batch size (processor.Config.BatchSize, and the baseline's)")
	flag.DurationVar(&o.batchWait, "batch-wait", 50*time.Millisecond, "batch wait (processor.Config.BatchWait, and the baseline's)")
	flag.DurationVar(&o.commitInterval, "commit-interval", 100*time.Millisecond, "auto-commit interval of both sides in throughput trials (the framework's default is 1s; shorter makes the end of a trial visible sooner and adds one cheap OffsetCommit per interval)")
	flag.Var(&o.consumer, "consumer", "librdkafka consumer properties for both sides, k=v,k=v (on top of the framework's defaults)")
	flag.Var(&o.producer, "producer", "librdkafka producer properties for both sides, k=v,k=v (on top of the framework's defaults)")
	flag.StringVar(&o.samsaCodec, "samsa-codec", "bytes", "samsa's input decoders: bytes (codec.Bytes, copies) or nocopy (a DecoderFunc returning the slice it is given)")
	flag.StringVar(&o.contestants, "contestants", "loop,baseline,samsa,goka", "contestants of the main comparison, in alternation order: loop (the strongest hand-written loop, at its own fastest settings), baseline (the same loop at the framework's client settings), baseline-2g (produces on a second goroutine), samsa, samsa-nocopy (samsa with -samsa-codec nocopy), samsa-otel (samsa with tracing and metrics on; its ratio to samsa is printed), samsa-trace (tracing only, every span sampled), samsa-trace1 (tracing only, parent-based 1% sampler), samsa-metrics (metrics only), samsa-hdr (a constant traceparent-sized header on every output, tracing off), loop-hdr (the loop writing that header on every output), goka (goka v1.1.14 on sarama, built from integration/gokabench)")
	flag.StringVar(&o.gokaCompression, "goka-compression", "", "goka's producer compression: none, snappy, lz4, zstd, gzip (empty: goka's default, snappy; samsa and the baselines produce uncompressed)")
	flag.BoolVar(&o.throughput, "throughput", true, "run the main throughput comparison")
	flag.BoolVar(&o.tuning, "tuning", true, "run the consumer prefetch tuning comparison")
	flag.StringVar(&o.budgetCurve, "budget-curve", "4,8,16,32,64", "samsa MaxBufferedBytes values in MiB for the throughput-against-budget curve (samsa at each, the loop once per round; empty: no curve)")
	flag.IntVar(&o.budgetTrials, "budget-trials", 2, "rounds of the budget curve")
	flag.IntVar(&o.tuningTrials, "tuning-trials", 2, "trials per contestant and variant in the tuning comparison")
	flag.StringVar(&o.variants, "variants", "librdkafka,framework,deep", "tuning variants to compare: "+strings.Join(variantNames(), ", "))
	flag.BoolVar(&o.latency, "latency", true, "run the fixed-rate latency comparison")
	flag.IntVar(&o.latencyRate, "latency-rate", 20_000, "records/s written in the latency comparison")
	flag.DurationVar(&o.latencyDuration, "latency-duration", 20*time.Second, "how long the latency comparison writes, per contestant")
	flag.IntVar(&o.latencyRounds, "latency-rounds", 1, "latency runs per contestant (alternating loop, samsa)")
	flag.DurationVar(&o.latencyWarmup, "latency-warmup", 2*time.Second, "records written in the first part of the latency run are left out of the percentiles")
	flag.DurationVar(&o.latencyCommit, "latency-commit-interval", time.Second, "auto-commit interval of both sides in the latency comparison (the framework's default)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the last trial of -cpuprofile-of (samsa) in the main comparison to this file")
	flag.StringVar(&o.cpuProfileOf, "cpuprofile-of", "samsa", "the contestant -cpuprofile profiles")
	flag.StringVar(&o.blockProfile, "blockprofile", "", "write block and mutex profiles (PREFIX-<contestant>.block, .mutex) of the last trial of each in-binary contestant of the main comparison: where its goroutines wait (off-CPU), from start until it is told to stop")
	flag.StringVar(&o.baselineCPUProfile, "baseline-cpuprofile", "", "write a CPU profile of the last baseline trial of the main comparison to this file")
	flag.StringVar(&o.memProfile, "memprofile", "", "write allocation profiles PREFIX-<contestant>.before and .after around the last trial of each contestant in the main comparison (compare with go tool pprof -sample_index=alloc_objects -diff_base)")
	flag.BoolVar(&o.checkConfig, "check-config", true, "compare the effective librdkafka configuration of both sides (debug=conf) before measuring")
	flag.DurationVar(&o.trialTimeout, "trial-timeout", 3*time.Minute, "a trial that has not committed everything by then fails the run")
	flag.StringVar(&o.kafkaVersion, "kafka-version", "", "Kafka version to start when -brokers is empty (default: the launcher's)")
	flag.Int64Var(&o.samsaBuffer, "samsa-buffer", 0, "samsa's MaxBufferedBytes in bytes (0: the framework's default)")
	flag.StringVar(&o.before, "before", "", "a binary of this harness built from an earlier commit; adds the contestant samsa-before, which runs samsa as that binary has it (build it from a worktree of the commit with this harness's files; the child protocol must match)")
	flag.StringVar(&o.child, "child", "", "internal: run one trial described by this JSON in this process (the harness re-executes itself so that each trial has a process of its own)")
	flag.Usage = func() {
		fmt.Fprintf(flag.Output(), "usage: go run ./integration/bench [throughput] [flags]\n\n%s\n\nflags:\n", strings.TrimSpace(usageText))
		flag.PrintDefaults()
	}
	flag.Parse(args)
	if o.child != "" {
		return throughputChild(o.child)
	}
	if err := o.validate(); err != nil {
		return usageError("throughput", err)
	}
	return runScenario(func(ctx context.Context) error { return benchmark(ctx, o) })
}

const usageText = `
Measures records/s end to end (consume -> identity handler -> produce -> ack -> commit) of
samsa, of a hand-written confluent-kafka-go loop with the same client settings and of goka,
each trial in a process of its own, alternating trials, checks every output, and prints
the ratios and each contestant's max RSS; then a consumer-prefetch tuning comparison and
p50/p99 latency at a fixed rate. Example:

  go run ./integration/bench -records 1000000 -trials 3`

func (o *options) validate() error {
	if o.records < o.partitions || o.partitions < 1 || o.trials < 1 || o.batch < 1 || o.valueSize < 8 {
		return fmt.Errorf("need -records >= -partitions >= 1, -trials >= 1, -batch >= 1, -value-size >= 8")
	}
	switch o.samsaCodec {
	case "bytes", "nocopy":
	default:
		return fmt.Errorf("-samsa-codec %q: want bytes or nocopy", o.samsaCodec)
	}
	if len(splitList(o.contestants)) == 0 {
		return fmt.Errorf("-contestants: none given")
	}
	for _, c := range splitList(o.contestants) {
		if c == cBefore && o.before == "" {
			return fmt.Errorf("-contestants: samsa-before needs -before PATH")
		}
		if _, ok := findContestant(c); !ok {
			return fmt.Errorf("-contestants: unknown %q (have loop, loop-hdr, baseline, baseline-2g, samsa, samsa-trace, samsa-trace1, samsa-nocopy, samsa-otel, samsa-metrics, samsa-hdr, goka)", c)
		}
	}
	for _, v := range splitList(o.variants) {
		if _, ok := findVariant(v); !ok {
			return fmt.Errorf("-variants: unknown %q (have %s)", v, strings.Join(variantNames(), ", "))
		}
	}
	return nil
}

func benchmark(ctx context.Context, o options) error {
	start := time.Now()
	rep := &report{opts: o, cmd: commandLine(), load0: loadAvg()}
	var gokaBin string
	if o.throughput && slices.Contains(splitList(o.contestants), cGoka) {
		dir, err := os.MkdirTemp("", "samsa-bench-goka-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		fmt.Println("building integration/gokabench (goka contestant)...")
		if gokaBin, err = buildGoka(ctx, dir); err != nil {
			return err
		}
		if rep.gokaIdleRSS, err = idleRSS(ctx, gokaBin); err != nil {
			return fmt.Errorf("idle RSS of gokabench: %w", err)
		}
	}
	if self, err := os.Executable(); err == nil {
		rep.selfIdleRSS, _ = idleRSS(ctx, self)
	}
	in := stack.UniqueName("bench-in")
	adm, note, done, err := o.setUp(ctx, o.kafkaVersion, 1, in)
	if err != nil {
		return err
	}
	defer done()
	rep.broker = note
	env, err := newEnv(o, adm, in)
	if err != nil {
		return err
	}
	defer env.close()
	env.gokaBin = gokaBin

	fmt.Printf("preloading %d records (%d partitions, %d-byte values) into %s...\n", o.records, o.partitions, o.valueSize, env.in)
	took, err := env.preload(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("preloaded in %s (%.0f records/s)\n", took.Round(time.Millisecond), float64(o.records)/took.Seconds())

	if o.checkConfig {
		diffs, err := env.compareConfigs(ctx)
		if err != nil {
			return fmt.Errorf("config check: %w", err)
		}
		rep.configDiffs = diffs
		if len(diffs) == 0 {
			fmt.Println("config check: samsa's and the baseline's librdkafka configurations are identical (consumer and producer)")
		} else {
			fmt.Println("config check: DIFFERENCES between samsa's and the baseline's librdkafka configuration:")
			for _, d := range diffs {
				fmt.Println("  ", d)
			}
		}
	}

	// Main comparison.
	if o.throughput {
		fmt.Printf("\n== throughput: batch size %d, %d trials each, alternating ==\n", o.batch, o.trials)
	}
	fw := variant{name: "framework"}
	for i := range o.trials {
		if !o.throughput {
			break
		}
		for _, name := range splitList(o.contestants) {
			c, _ := findContestant(name)
			var prof profiles
			if i == o.trials-1 {
				switch c.name {
				case o.cpuProfileOf:
					prof.cpu = o.cpuProfile
				case "baseline":
					prof.cpu = o.baselineCPUProfile
				}
				if o.memProfile != "" {
					prof.mem = o.memProfile + "-" + c.name
				}
				if o.blockProfile != "" {
					prof.block = o.blockProfile + "-" + c.name
				}
			}
			r, err := env.trial(ctx, c, fw, prof)
			if err != nil {
				return fmt.Errorf("%s trial %d: %w", c.name, i+1, err)
			}
			r.trial = i + 1
			fmt.Println(" ", r.line())
			rep.main = append(rep.main, r)
		}
	}

	if budgets, err := budgetList(o.budgetCurve); err != nil {
		return err
	} else if len(budgets) > 0 {
		fmt.Printf("\n== throughput against samsa's MaxBufferedBytes: %s MiB; %d rounds, alternating, the loop once per round ==\n", o.budgetCurve, o.budgetTrials)
		for i := range o.budgetTrials {
			r, err := env.trial(ctx, named(cLoop), variant{name: "budget"}, profiles{})
			if err != nil {
				return fmt.Errorf("budget curve loop trial %d: %w", i+1, err)
			}
			r.trial = i + 1
			fmt.Println(" ", r.line())
			rep.budget = append(rep.budget, r)
			for _, b := range budgets {
				r, err := env.trial(ctx, named(cSamsa), variant{name: budgetVariant(b), buffer: b << 20}, profiles{})
				if err != nil {
					return fmt.Errorf("budget curve %d MiB trial %d: %w", b, i+1, err)
				}
				r.trial = i + 1
				fmt.Println(" ", r.line())
				rep.budget = append(rep.budget, r)
			}
		}
	}

	if o.tuning {
		variants := splitList(o.variants)
		fmt.Printf("\n== consumer prefetch tuning: %s; %d trials each, alternating ==\n", strings.Join(variants, ", "), o.tuningTrials)
		for i := range o.tuningTrials {
			for _, name := range variants {
				v, _ := findVariant(name)
				for _, c := range []contestant{named(cBaseline), named(cSamsa)} {
					r, err := env.trial(ctx, c, v, profiles{})
					if err != nil {
						return fmt.Errorf("tuning %s %s trial %d: %w", v.name, c.name, i+1, err)
					}
					r.trial = i + 1
					fmt.Println(" ", r.line())
					rep.tuning = append(rep.tuning, r)
				}
			}
		}
	}

	if o.latency {
		fmt.Printf("\n== latency: %d records/s for %s per contestant ==\n", o.latencyRate, o.latencyDuration)
		for range o.latencyRounds {
			for _, c := range []contestant{named(cLoop), named(cSamsa)} {
				lr, err := env.latency(ctx, c)
				if err != nil {
					return fmt.Errorf("latency %s: %w", c.name, err)
				}
				fmt.Println(" ", lr.line())
				rep.latency = append(rep.latency, lr)
			}
		}
	}

	rep.elapsed = time.Since(start)
	rep.load1 = loadAvg()
	rep.print(os.Stdout)
	var failed []string
	for _, r := range slices.Concat(rep.main, rep.tuning, rep.budget) {
		if !r.ok() {
			failed = append(failed, fmt.Sprintf("%s %s #%d (%d missing, %d corrupt)", r.contestant, r.variant, r.trial, r.missing, r.corrupt))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("output check failed in %d trials: %s", len(failed), strings.Join(failed, "; "))
	}
	return nil
}

// report collects every figure for the final summary.
type report struct {
	opts        options
	cmd         string
	broker      string
	configDiffs []string
	main        []result
	tuning      []result
	budget      []result
	latency     []latencyResult
	load0       string
	load1       string
	elapsed     time.Duration
	selfIdleRSS int64 // max RSS of this binary run with -h
	gokaIdleRSS int64 // max RSS of gokabench run with -h; 0: goka not run
}

func (r *report) print(w *os.File) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	o := r.opts
	p("\n================ samsa throughput benchmark: summary ================")
	p("command:   %s", r.cmd)
	p("machine:   %d CPUs (GOMAXPROCS %d), %s, load average before %s, after %s", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), r.load0, r.load1)
	_, lib := kafka.LibraryVersion()
	p("broker:    %s (the broker shares the CPUs with the benchmark)", r.broker)
	p("client:    librdkafka %s; %d records, %d partitions, 12-byte keys, %d-byte values; batch %d, batch wait %s, commit interval %s", lib, o.records, o.partitions, o.valueSize, o.batch, o.batchWait, o.commitInterval)
	if len(r.opts.consumer) > 0 || len(r.opts.producer) > 0 {
		p("overrides: consumer %s; producer %s", r.opts.consumer.String(), r.opts.producer.String())
	}
	if o.checkConfig {
		if len(r.configDiffs) == 0 {
			p("config:    both sides' effective librdkafka configurations identical (debug=conf dump)")
		} else {
			p("config:    DIFFERENCES: %s", strings.Join(r.configDiffs, "; "))
		}
	}
	p("rate = records / (end - first batch handed to user code); end = committed offsets == end offsets (50 ms polls)")
	p("each trial in a child process: cpu = its user+sys per record over its whole life (client threads included); rss = its peak RSS (VmHWM, sampled);")
	p("  allocs = its Go heap allocations per record; output checked by a reader after the trial (FAILED: records missing or corrupt)")
	if r.selfIdleRSS > 0 || r.gokaIdleRSS > 0 {
		s := fmt.Sprintf("idle max RSS (binary run with -h): harness binary (samsa, baselines) %.1f MiB", float64(r.selfIdleRSS)/(1<<20))
		if r.gokaIdleRSS > 0 {
			s += fmt.Sprintf(", gokabench %.1f MiB", float64(r.gokaIdleRSS)/(1<<20))
		}
		p("%s", s)
	}
	if slices.Contains(splitList(o.contestants), cGoka) {
		comp := o.gokaCompression
		if comp == "" {
			comp = "snappy (goka's default)"
		}
		p("goka:      v1.1.14 on sarama v1.45.1, acks=all, compression %s, no idempotence; samsa and the baselines: idempotent, uncompressed", comp)
	}
	p("")
	if len(r.main) > 0 {
		p("throughput, framework defaults, samsa codec %s:", o.samsaCodec)
		for _, res := range r.main {
			p("  %s", res.line())
		}
		p("")
		r.ratioBlock(p, r.main, "framework")
	}
	if len(r.budget) > 0 {
		budgets, _ := budgetList(o.budgetCurve)
		var loops []result
		for _, res := range r.budget {
			if res.contestant == cLoop {
				loops = append(loops, res)
			}
		}
		l := medianRate(loops, cLoop)
		p("")
		p("throughput against samsa's MaxBufferedBytes (medians; loop %.0f records/s, max RSS %.0f MiB):", l, medianOf(loops, cLoop, result.rssMiB))
		for _, b := range budgets {
			var rs []result
			for _, res := range r.budget {
				if res.variant == budgetVariant(b) {
					rs = append(rs, res)
				}
			}
			s := medianRate(rs, cSamsa)
			p("  %4d MiB  %7.0f records/s  ratio to loop %.2f  max RSS %4.0f MiB (Go %3.0f)", b, s, s/l,
				medianOf(rs, cSamsa, result.rssMiB), medianOf(rs, cSamsa, func(x result) float64 { return float64(x.goPeak) / (1 << 20) }))
		}
	}
	if len(r.tuning) > 0 {
		p("")
		p("consumer prefetch tuning (median records/s; ratio samsa/baseline):")
		for _, name := range splitList(o.variants) {
			v, _ := findVariant(name)
			var rs []result
			for _, res := range r.tuning {
				if res.variant == name {
					rs = append(rs, res)
				}
			}
			b, s := medianRate(rs, "baseline"), medianRate(rs, "samsa")
			cb, cs := medianOf(rs, "baseline", result.cpuPerRecord), medianOf(rs, "samsa", result.cpuPerRecord)
			p("  %-11s baseline %7.0f  samsa %7.0f  ratio %.2f  (cpu us/rec %.2f / %.2f)  [%s]", name, b, s, s/b, cb, cs, v.describe())
		}
	}
	if len(r.latency) > 0 {
		p("")
		p("latency at %d records/s for %s (first %s left out); batch wait %s, commit interval %s:", o.latencyRate, o.latencyDuration, o.latencyWarmup, o.batchWait, o.latencyCommit)
		p("  output = load producer's Produce call -> copy readable in the output topic (acks=all), per record")
		p("  handler = oldest record's Produce call -> its batch handed to the handler, per batch")
		for _, lr := range r.latency {
			p("  %s", lr.line())
		}
	}
	p("")
	p("total run time %s", r.elapsed.Round(time.Second))
	p("======================================================================")
}

// ratioBlock prints each contestant's medians and min-max, and the ratios of each samsa
// contestant to the strongest baseline (by median records/s) and to goka.
func (r *report) ratioBlock(p func(string, ...any), rs []result, variant string) {
	names := splitList(r.opts.contestants)
	p("%-13s %-10s %-30s %-10s %-30s %s", "contestant", "ok", "records/s median (min-max)", "cpu us/rec", "max RSS MiB median (min-max)", "allocs/rec, B/rec")
	rate := func(x result) float64 { return x.rate() }
	rss := func(x result) float64 { return x.rssMiB() }
	for _, name := range names {
		ok, n := 0, 0
		for _, x := range rs {
			if x.contestant == name {
				n++
				if x.ok() {
					ok++
				}
			}
		}
		status := fmt.Sprintf("%d/%d", ok, n)
		if ok < n {
			status += " FAILED"
		}
		p("%-13s %-10s %-30s %-10.2f %-30s %.1f, %.0f", name, status,
			medianRange(values(rs, name, rate)), medianOf(rs, name, result.cpuPerRecord), medianRange(values(rs, name, rss)),
			medianOf(rs, name, result.allocsPerRecord), medianOf(rs, name, result.bytesPerRecord))
	}
	best, b := "", 0.0
	for _, name := range names {
		if m := medianRate(rs, name); (name == cLoop || strings.HasPrefix(name, "baseline")) && m > b {
			best, b = name, m
		}
	}
	g, gRSS := medianRate(rs, cGoka), medianOf(rs, cGoka, rss)
	if l := medianRate(rs, cLoop); l > 0 && g > 0 {
		p("RATIO loop/goka records/s: %.2f (the yardstick must be strong: target >= 1.15)", l/g)
	}
	for _, name := range names {
		if !strings.HasPrefix(name, "samsa") {
			continue
		}
		s := medianRate(rs, name)
		if s == 0 {
			continue
		}
		if b > 0 {
			p("RATIO %s/%s records/s at batch size %d: %.2f (target >= 0.95)", name, best, r.opts.batch, s/b)
		}
		if g > 0 {
			p("RATIO %s/goka records/s: %.2f", name, s/g)
			p("RATIO %s/goka max RSS: %.2f (target <= 1.50)", name, medianOf(rs, name, rss)/gRSS)
		}
	}
	if on, off := medianRate(rs, "samsa-otel"), medianRate(rs, "samsa"); on > 0 && off > 0 {
		p("RATIO samsa-otel/samsa (tracing and metrics on vs off): %.2f (target >= 0.95)", on/off)
	}
	if on, off := medianRate(rs, "samsa-trace"), medianRate(rs, "samsa"); on > 0 && off > 0 {
		p("RATIO samsa-trace/samsa (tracing, every span sampled, vs off): %.2f (target >= 0.90)", on/off)
	}
	if on, off := medianRate(rs, "loop-hdr"), medianRate(rs, cLoop); on > 0 && off > 0 {
		p("RATIO loop-hdr/loop (a traceparent header on every output, in the loop): %.2f", on/off)
	}
	if on, off := medianRate(rs, "samsa-trace1"), medianRate(rs, "samsa"); on > 0 && off > 0 {
		p("RATIO samsa-trace1/samsa (tracing at a parent-based 1%% sampler vs off): %.2f (target >= 0.97)", on/off)
	}
	for _, c := range []string{"samsa-metrics", "samsa-hdr"} {
		if on, off := medianRate(rs, c), medianRate(rs, "samsa"); on > 0 && off > 0 {
			p("RATIO %s/samsa: %.2f", c, on/off)
		}
	}
}

func medianRate(rs []result, name string) float64 {
	return medianOf(rs, name, func(x result) float64 { return x.rate() })
}

// values returns f of name's trials that passed the output check.
func values(rs []result, name string, f func(result) float64) []float64 {
	var xs []float64
	for _, r := range rs {
		if r.contestant == name && r.ok() {
			xs = append(xs, f(r))
		}
	}
	return xs
}

func medianOf(rs []result, name string, f func(result) float64) float64 {
	return median(values(rs, name, f))
}

// budgetList parses -budget-curve: MiB values, comma-separated.
func budgetList(s string) ([]int64, error) {
	var out []int64
	for _, f := range splitList(s) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-budget-curve: %q is not a positive number of MiB", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func budgetVariant(mib int64) string { return fmt.Sprintf("budget-%d", mib) }
