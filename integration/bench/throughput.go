package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/integration/stack"
)

type options struct {
	input
	tuningTrials, budgetTrials, latencyRate, latencyRounds                 int
	batchWait, commitInterval                                              time.Duration
	latencyDuration, latencyWarmup, latencyCommit                          time.Duration
	consumer, producer                                                     kvFlag
	samsaCodec, contestants, before, budgetCurve, variants                 string
	cpuProfile, cpuProfileOf, blockProfile, baselineCPUProfile, memProfile string
	kafkaVersion, gokaCompression                                          string
	samsaBuffer                                                            int64
	throughput, tuning, latency, checkConfig                               bool
	// -child: run one trial (JSON childSpec) in this process
	child string
}

// throughputMain runs the throughput scenario (the default) and returns the exit code.
func throughputMain(args []string) int {
	var o options
	flag := o.flagSet("throughput", 1_000_000, 8, 100)
	o.trialFlags(flag, 3, 1000, 3*time.Minute)
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
	flag.StringVar(&o.variants, "variants", "librdkafka,framework,deep", "tuning variants to compare: "+strings.Join(slices.Sorted(maps.Keys(tuningVariants())), ", "))
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
		return o.usageError(err)
	}
	return o.run(func(ctx context.Context) (*summary, error) { return benchmark(ctx, o) })
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
		if !slices.Contains(contestants, c) {
			return fmt.Errorf("-contestants: unknown %q (have %s)", c, strings.Join(contestants, ", "))
		}
	}
	for _, v := range splitList(o.variants) {
		if _, ok := tuningVariants()[v]; !ok {
			return fmt.Errorf("-variants: unknown %q (have %s)", v, strings.Join(slices.Sorted(maps.Keys(tuningVariants())), ", "))
		}
	}
	return nil
}

func benchmark(ctx context.Context, o options) (*summary, error) {
	rep := &report{opts: o}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this binary to re-execute per trial: %w", err)
	}
	var gokaBin string
	if o.throughput && slices.Contains(splitList(o.contestants), cGoka) {
		dir, err := os.MkdirTemp("", "samsa-bench-goka-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		fmt.Println("building integration/gokabench (goka contestant)...")
		if gokaBin, err = buildGoka(ctx, dir); err != nil {
			return nil, err
		}
		if rep.gokaIdleRSS, err = idleRSS(ctx, gokaBin); err != nil {
			return nil, fmt.Errorf("idle RSS of gokabench: %w", err)
		}
	}
	rep.selfIdleRSS, _ = idleRSS(ctx, self)
	in := stack.UniqueName("bench-in")
	adm, note, done, err := o.setUp(ctx, o.kafkaVersion, 1, in)
	if err != nil {
		return nil, err
	}
	defer done()
	rep.broker = note
	env := &env{o: o, adm: adm, in: in, self: self, gokaBin: gokaBin}
	fmt.Printf("preloading %d records (%d partitions, %d-byte values) into %s...\n",
		o.records, o.partitions, o.valueSize, in)
	took, ends, err := o.preloadInput(ctx, in, bulkProducer())
	if err != nil {
		return nil, err
	}
	env.ends = ends
	fmt.Printf("preloaded in %s (%.0f records/s)\n", took.Round(time.Millisecond), float64(o.records)/took.Seconds())

	if o.checkConfig {
		if rep.configDiffs, err = env.compareConfigs(ctx); err != nil {
			return nil, fmt.Errorf("config check: %w", err)
		}
		if len(rep.configDiffs) == 0 {
			fmt.Println("config check: samsa's and the baseline's librdkafka configurations are identical (consumer and producer)")
		} else {
			fmt.Println("config check: DIFFERENCES between samsa's and the baseline's librdkafka configuration:")
			for _, d := range rep.configDiffs {
				fmt.Println("  ", d)
			}
		}
	}
	// trial runs one trial into dst and prints its line.
	trial := func(dst *[]result, what string, round int, c string, v variant, prof profiles) error {
		r, err := env.trial(ctx, c, v, prof)
		if err != nil {
			return fmt.Errorf("%s%s trial %d: %w", what, c, round+1, err)
		}
		r.trial = round + 1
		fmt.Println(" ", r.line())
		*dst = append(*dst, r)
		return nil
	}

	if o.throughput {
		fmt.Printf("\n== throughput: batch size %d, %d trials each, alternating ==\n", o.batch, o.trials)
		for i := range o.trials {
			for _, c := range splitList(o.contestants) {
				if err := trial(&rep.main, "", i, c, variant{name: "framework"}, o.profiles(c, i)); err != nil {
					return nil, err
				}
			}
		}
	}
	budgets, err := budgetList(o.budgetCurve)
	if err != nil {
		return nil, err
	}
	if len(budgets) > 0 {
		fmt.Printf("\n== throughput against samsa's MaxBufferedBytes: %s MiB; %d rounds, alternating, the loop once per round ==\n", o.budgetCurve, o.budgetTrials)
		for i := range o.budgetTrials {
			if err := trial(&rep.budget, "budget curve ", i, cLoop, variant{name: "budget"}, profiles{}); err != nil {
				return nil, err
			}
			for _, b := range budgets {
				v := variant{name: budgetVariant(b), buffer: b << 20}
				if err := trial(&rep.budget, fmt.Sprintf("budget curve %d MiB ", b), i, cSamsa, v, profiles{}); err != nil {
					return nil, err
				}
			}
		}
	}
	if o.tuning {
		variants := splitList(o.variants)
		fmt.Printf("\n== consumer prefetch tuning: %s; %d trials each, alternating ==\n", strings.Join(variants, ", "), o.tuningTrials)
		for i := range o.tuningTrials {
			for _, name := range variants {
				v := variant{name: name, consumer: tuningVariants()[name]}
				for _, c := range []string{cBaseline, cSamsa} {
					if err := trial(&rep.tuning, "tuning "+v.name+" ", i, c, v, profiles{}); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	if o.latency {
		fmt.Printf("\n== latency: %d records/s for %s per contestant ==\n", o.latencyRate, o.latencyDuration)
		for range o.latencyRounds {
			for _, c := range []string{cLoop, cSamsa} {
				lr, err := env.latency(ctx, c)
				if err != nil {
					return nil, fmt.Errorf("latency %s: %w", c, err)
				}
				fmt.Println(" ", lr.line())
				rep.latency = append(rep.latency, lr)
			}
		}
	}

	var failed []string
	for _, r := range slices.Concat(rep.main, rep.tuning, rep.budget) {
		if !r.ok() {
			failed = append(failed, fmt.Sprintf("%s %s #%d (%d missing, %d corrupt)", r.contestant, r.variant, r.trial, r.missing, r.corrupt))
		}
	}
	if len(failed) > 0 {
		err = fmt.Errorf("output check failed in %d trials: %s", len(failed), strings.Join(failed, "; "))
	}
	return rep.summary(), err
}

// profiles names the profiles to write in trial round of contestant: those of the last
// round of the main comparison.
func (o options) profiles(contestant string, round int) profiles {
	var prof profiles
	if round != o.trials-1 {
		return prof
	}
	switch contestant {
	case o.cpuProfileOf:
		prof.cpu = o.cpuProfile
	case cBaseline:
		prof.cpu = o.baselineCPUProfile
	}
	if o.memProfile != "" {
		prof.mem = o.memProfile + "-" + contestant
	}
	if o.blockProfile != "" {
		prof.block = o.blockProfile + "-" + contestant
	}
	return prof
}

// report collects every figure for the summary.
type report struct {
	opts        options
	broker      string
	configDiffs []string
	main        []result
	tuning      []result
	budget      []result
	latency     []latencyResult
	selfIdleRSS int64 // max RSS of this binary run with -h
	gokaIdleRSS int64 // max RSS of gokabench run with -h; 0: goka not run
}

func (r *report) summary() *summary {
	o := r.opts
	_, lib := kafka.LibraryVersion()
	s := &summary{about: []string{
		fmt.Sprintf("broker: %s (the broker shares the CPUs with the benchmark)", r.broker),
		fmt.Sprintf("client: librdkafka %s; %d records, %d partitions, 12-byte keys, %d-byte values; batch %d, batch wait %s, commit interval %s",
			lib, o.records, o.partitions, o.valueSize, o.batch, o.batchWait, o.commitInterval),
	}}
	about := func(format string, a ...any) { s.about = append(s.about, fmt.Sprintf(format, a...)) }
	if len(o.consumer) > 0 || len(o.producer) > 0 {
		about("overrides: consumer %s; producer %s", o.consumer.String(), o.producer.String())
	}
	if o.checkConfig && len(r.configDiffs) == 0 {
		about("config: both sides' effective librdkafka configurations identical (debug=conf dump)")
	} else if o.checkConfig {
		about("config: DIFFERENCES: %s", strings.Join(r.configDiffs, "; "))
	}
	about("rate = records / (end - first batch handed to user code); end = committed offsets == end offsets (50 ms polls)")
	about("each trial in a child process: cpu = its user+sys per record over its whole life (client threads included); " +
		"rss = its peak RSS (VmHWM, sampled); allocs = its Go heap allocations per record; " +
		"output checked by a reader after the trial (FAILED: records missing or corrupt)")
	if r.selfIdleRSS > 0 || r.gokaIdleRSS > 0 {
		idle := fmt.Sprintf("idle max RSS (binary run with -h): harness binary (samsa, baselines) %.1f MiB",
			float64(r.selfIdleRSS)/(1<<20))
		if r.gokaIdleRSS > 0 {
			idle += fmt.Sprintf(", gokabench %.1f MiB", float64(r.gokaIdleRSS)/(1<<20))
		}
		about("%s", idle)
	}
	if slices.Contains(splitList(o.contestants), cGoka) {
		about("goka: v1.1.14 on sarama v1.45.1, acks=all, compression %s, no idempotence; samsa and the baselines: idempotent, uncompressed",
			cmp.Or(o.gokaCompression, "snappy (goka's default)"))
	}
	if len(r.main) > 0 {
		r.ratioTable(s.table(fmt.Sprintf("throughput, framework defaults, samsa codec %s:", o.samsaCodec),
			"contestant", "ok", "records/s median (min-max)", "cpu us/rec", "max RSS MiB median (min-max)", "allocs/rec", "B/rec"))
	}
	if len(r.budget) > 0 {
		l := medianRate(r.budget, cLoop)
		title := fmt.Sprintf("throughput against samsa's MaxBufferedBytes (medians; loop %.0f records/s, max RSS %.0f MiB):",
			l, medianOf(r.budget, cLoop, result.rssMiB))
		t := s.table(title, "MaxBufferedBytes MiB", "records/s", "ratio to loop", "max RSS MiB", "Go MiB")
		budgets, _ := budgetList(o.budgetCurve)
		for _, b := range budgets {
			rs := withVariant(r.budget, budgetVariant(b))
			rate := medianRate(rs, cSamsa)
			goMiB := medianOf(rs, cSamsa, func(x result) float64 { return float64(x.goPeak) / (1 << 20) })
			t.add(b, fmt.Sprintf("%.0f", rate), fmt.Sprintf("%.2f", rate/l),
				fmt.Sprintf("%.0f", medianOf(rs, cSamsa, result.rssMiB)), fmt.Sprintf("%.0f", goMiB))
		}
	}
	if len(r.tuning) > 0 {
		t := s.table("consumer prefetch tuning (median records/s; ratio samsa/baseline):",
			"variant", "baseline", "samsa", "ratio", "cpu us/rec baseline", "cpu us/rec samsa", "consumer settings")
		for _, name := range splitList(o.variants) {
			v := variant{name: name, consumer: tuningVariants()[name]}
			rs := withVariant(r.tuning, name)
			b, sa := medianRate(rs, cBaseline), medianRate(rs, cSamsa)
			t.add(name, fmt.Sprintf("%.0f", b), fmt.Sprintf("%.0f", sa), fmt.Sprintf("%.2f", sa/b),
				fmt.Sprintf("%.2f", medianOf(rs, cBaseline, result.cpuPerRecord)),
				fmt.Sprintf("%.2f", medianOf(rs, cSamsa, result.cpuPerRecord)), v.describe())
		}
	}
	if len(r.latency) > 0 {
		t := s.table(fmt.Sprintf("latency at %d records/s for %s (first %s left out); batch wait %s, commit interval %s:",
			o.latencyRate, o.latencyDuration, o.latencyWarmup, o.batchWait, o.latencyCommit),
			"contestant", "output p50", "p99", "p99.9", "max", "records", "handler p50", "p99", "batches", "records/batch", "process cpu")
		for _, l := range r.latency {
			t.add(l.contestant, ms(pct(l.out, .5)), ms(pct(l.out, .99)), ms(pct(l.out, .999)), ms(pct(l.out, 1)), l.records,
				ms(pct(l.batch, .5)), ms(pct(l.batch, .99)), l.batches, fmt.Sprintf("%.0f", l.perBatch()),
				fmt.Sprintf("%.0f%%", l.cpuPct))
		}
		t.note("output = load producer's Produce call -> copy readable in the output topic (acks=all), per record")
		t.note("handler = oldest record's Produce call -> its batch handed to the handler, per batch")
	}
	return s
}

// ratioTable adds each contestant's medians and min-max to t, and the ratios of each
// samsa contestant to the strongest baseline (by median records/s) and to goka.
func (r *report) ratioTable(t *table) {
	rs, names := r.main, splitList(r.opts.contestants)
	rate := func(x result) float64 { return x.rate() }
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
		t.add(name, status, medianRange(values(rs, name, rate)), fmt.Sprintf("%.2f", medianOf(rs, name, result.cpuPerRecord)),
			medianRange(values(rs, name, result.rssMiB)), fmt.Sprintf("%.1f", medianOf(rs, name, result.allocsPerRecord)),
			fmt.Sprintf("%.0f", medianOf(rs, name, result.bytesPerRecord)))
	}
	best, b := "", 0.0
	for _, name := range names {
		if m := medianRate(rs, name); (name == cLoop || strings.HasPrefix(name, "baseline")) && m > b {
			best, b = name, m
		}
	}
	g, gRSS := medianRate(rs, cGoka), medianOf(rs, cGoka, result.rssMiB)
	if l := medianRate(rs, cLoop); l > 0 && g > 0 {
		t.note("RATIO loop/goka records/s: %.2f (the yardstick must be strong: target >= 1.15)", l/g)
	}
	for _, name := range names {
		s := medianRate(rs, name)
		if !strings.HasPrefix(name, "samsa") || s == 0 {
			continue
		}
		if b > 0 {
			t.note("RATIO %s/%s records/s at batch size %d: %.2f (target >= 0.95)", name, best, r.opts.batch, s/b)
		}
		if g > 0 {
			t.note("RATIO %s/goka records/s: %.2f", name, s/g)
			t.note("RATIO %s/goka max RSS: %.2f (target <= 1.50)", name, medianOf(rs, name, result.rssMiB)/gRSS)
		}
	}
	for _, x := range []struct{ on, off, what string }{
		{"samsa-otel", cSamsa, " (tracing and metrics on vs off): %.2f (target >= 0.95)"},
		{"samsa-trace", cSamsa, " (tracing, every span sampled, vs off): %.2f (target >= 0.90)"},
		{"loop-hdr", cLoop, " (a traceparent header on every output, in the loop): %.2f"},
		{"samsa-trace1", cSamsa, " (tracing at a parent-based 1%% sampler vs off): %.2f (target >= 0.97)"},
		{"samsa-metrics", cSamsa, ": %.2f"},
		{"samsa-hdr", cSamsa, ": %.2f"},
	} {
		if on, off := medianRate(rs, x.on), medianRate(rs, x.off); on > 0 && off > 0 {
			t.note("RATIO "+x.on+"/"+x.off+x.what, on/off)
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

func withVariant(rs []result, variant string) []result {
	return slices.DeleteFunc(slices.Clone(rs), func(r result) bool { return r.variant != variant })
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
