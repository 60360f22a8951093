package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
)

type concurrencyOptions struct {
	input
	keys, concurrency     int
	delay, orderedSeconds time.Duration
	contestants           string
}

// concurrencyMain runs the concurrency scenario and returns the exit code.
func concurrencyMain(args []string) int {
	var o concurrencyOptions
	fs := o.flagSet("concurrency", 300_000, 8, 0)
	fs.IntVar(&o.keys, "keys", 10_000, "distinct keys, spread over the partitions")
	fs.DurationVar(&o.delay, "delay", 10*time.Millisecond, "what the handler waits per record (a call to a service)")
	fs.IntVar(&o.concurrency, "concurrency", 1000, "processor.Config.Concurrency of the key and unordered contestants")
	o.trialFlags(fs, 3, 0, 5*time.Minute)
	fs.DurationVar(&o.orderedSeconds, "ordered-time", 20*time.Second, "how long a partition-ordered trial runs (it would take hours over every record); its records/s is what it committed in that time")
	fs.StringVar(&o.contestants, "contestants", "ordered,key,unordered", "ordered: Concurrency 1 (partition order); key: Concurrency -concurrency, Ordering ByKey; unordered: Concurrency -concurrency, Ordering Unordered")
	fs.Parse(args)
	if o.records < o.partitions || o.partitions < 1 || o.keys < o.partitions || o.trials < 1 || o.concurrency < 2 || o.delay <= 0 {
		return o.usageError(errors.New("need -records >= -partitions >= 1, -keys >= -partitions, -trials >= 1, -concurrency >= 2, -delay > 0"))
	}
	for _, c := range splitList(o.contestants) {
		if c != "ordered" && c != "key" && c != "unordered" {
			return o.usageError(fmt.Errorf("unknown contestant %q: want ordered, key or unordered", c))
		}
	}
	return o.run(func(ctx context.Context) (*summary, error) { return concurrencyRun(ctx, o) })
}

type concurrencyResult struct {
	records   int64         // committed in the trial (ordered: handled)
	took      time.Duration // first record handled to the end (all committed, or ordered-time)
	cpu       time.Duration // this process's user+sys over the trial
	peakRSS   int64         // VmHWM over the trial (reset at its start)
	peakGo    uint64        // Go's memory (runtime/metrics total minus released), sampled every 50 ms
	maxUnits  int64         // handler calls running at once
	goroutine int           // goroutines at the end of handling, before the stop
}

func (r concurrencyResult) rps() float64 { return float64(r.records) / r.took.Seconds() }

func concurrencyRun(ctx context.Context, o concurrencyOptions) (*summary, error) {
	in, out := stack.UniqueName("concbench-in"), stack.UniqueName("concbench-out")
	_, note, done, err := o.setUp(ctx, "", 1, in, out)
	if err != nil {
		return nil, err
	}
	defer done()
	took, ends, err := preload(ctx, o.brokers, in, o.partitions, o.records,
		kafka.ConfigMap{"linger.ms": 50, "acks": "all", "enable.idempotence": true, "queue.buffering.max.messages": 1_000_000},
		func(i int) (int32, []byte, []byte) {
			k := i % o.keys
			return int32(k % o.partitions), fmt.Appendf(nil, "key-%06d", k), fmt.Appendf(nil, "value-%d", i)
		})
	if err != nil {
		return nil, err
	}
	fmt.Printf("preloaded %d records over %d keys into %s (%d partitions) in %s; handler waits %s per record\n",
		o.records, o.keys, in, o.partitions, took.Round(time.Millisecond), o.delay)

	contestants := splitList(o.contestants)
	results, err := rounds(o.trials, contestants, func(round int, c string) (concurrencyResult, error) {
		r, err := concurrencyTrial(ctx, o, c, in, out, ends)
		if err != nil {
			return r, err
		}
		fmt.Printf("round %d %-9s %9.0f records/s  (%d records in %s; CPU %.1f µs/record; peak RSS %s MiB, Go %s MiB; %d calls at once; %d goroutines; load %s)\n",
			round+1, c, r.rps(), r.records, r.took.Round(time.Millisecond), perRecord(r.cpu, int(r.records)),
			mib(r.peakRSS), mib(int64(r.peakGo)), r.maxUnits, r.goroutine, loadAvg())
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	sum := &summary{about: []string{"broker: " + note, fmt.Sprintf(
		"config: %d records, %d partitions, %d keys, handler waits %s per record, Concurrency %d; %d rounds",
		o.records, o.partitions, o.keys, o.delay, o.concurrency, o.trials)}}
	t := sum.table("median (min-max) over the rounds:", "contestant", "records/s", "CPU µs/record", "peak RSS MiB, round 1",
		"Go MiB", "ratio to ordered")
	t.note("every trial runs in this process: VmHWM is reset at a trial's start, but only down to the RSS that " +
		"earlier trials left (librdkafka's malloc arenas stay resident), so only round 1's peak RSS is shown; " +
		"Go MiB (the runtime's total minus what it released) is the median over the rounds")
	med := map[string]float64{}
	for _, c := range contestants {
		var rps, cpu, goMem []float64
		for _, r := range results[c] {
			rps = append(rps, r.rps())
			cpu = append(cpu, perRecord(r.cpu, int(r.records)))
			goMem = append(goMem, float64(r.peakGo)/(1<<20))
		}
		med[c] = median(rps)
		ratio := "-"
		if base := med["ordered"]; base > 0 && c != "ordered" {
			ratio = fmt.Sprintf("%.1fx", med[c]/base)
		}
		t.add(c, medianRange(rps), fmt.Sprintf("%.1f", median(cpu)), mib(results[c][0].peakRSS),
			fmt.Sprintf("%.0f", median(goMem)), ratio)
	}
	return sum, nil
}

// concurrencyTrial runs one contestant with a fresh group over the preloaded input: until
// every record is committed, or for -ordered-time (ordered).
func concurrencyTrial(ctx context.Context, o concurrencyOptions, contestant, in, out string, ends []int64) (concurrencyResult, error) {
	var res concurrencyResult
	group := stack.UniqueName("concbench-" + contestant)
	cfg := processor.Config{Membership: processor.Membership{Brokers: o.brokers}, Group: group}
	switch contestant {
	case "key":
		cfg.Concurrency = o.concurrency
	case "unordered":
		cfg.Concurrency, cfg.Ordering = o.concurrency, processor.Unordered
	}
	output := processor.NewOutput(out, codec.Bytes(), codec.Bytes())
	var first atomic.Int64 // unix nanos of the first call
	var handled atomic.Int64
	var running, most atomic.Int64
	h := processor.HandlerFunc[[]byte, []byte](func(ctx context.Context, b *processor.Batch[[]byte, []byte]) error {
		first.CompareAndSwap(0, time.Now().UnixNano())
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		for _, r := range b.Records {
			time.Sleep(o.delay)
			handled.Add(1)
			if err := output.Send(b, r.Key, r.Value); err != nil {
				return err
			}
		}
		return nil
	})
	p, err := processor.New(cfg, []processor.Input[[]byte, []byte]{{Topic: in, Key: codec.Bytes(), Value: codec.Bytes()}}, h)
	if err != nil {
		return res, err
	}
	probe, err := newOffsetProbe(o.brokers, group, in, ends)
	if err != nil {
		return res, err
	}
	defer probe.close()

	runtime.GC()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM to the current RSS
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	peakGo := sampleGoPeak(sctx)
	cpu0 := cpuTime()
	run := startRun(ctx, p.Run)
	deadline := time.Now().Add(o.trialTimeout)
	for first.Load() == 0 {
		if time.Now().After(deadline) {
			run.stop()
			return res, errors.New("no record handled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	began := time.Unix(0, first.Load())
	if contestant == "ordered" {
		// A batch of 1000 records takes 10 s here: counting commits would round the
		// figure down to whole batches, so count the records handled instead (in its favour).
		time.Sleep(time.Until(began.Add(o.orderedSeconds)))
		res.records = handled.Load()
		res.took = time.Since(began)
	} else {
		if err := probe.await(ctx, 20*time.Millisecond, deadline, run.done); err != nil {
			return res, errors.Join(fmt.Errorf("-trial-timeout %s: %w", o.trialTimeout, err), run.stop())
		}
		res.took = time.Since(began)
		res.records = int64(o.records)
	}
	res.cpu = cpuTime() - cpu0
	res.goroutine = runtime.NumGoroutine()
	res.peakRSS = procStatus("/proc/self/status", "VmHWM:")[0]
	res.maxUnits = most.Load()
	if err := run.stop(); err != nil {
		return res, err
	}
	stopSampling()
	res.peakGo = peakGo.Load()
	return res, nil
}
