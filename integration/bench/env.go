package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/integration/stack"
)

// env is the broker side of a run: an admin client, the preloaded input topic and its end
// offsets.
type env struct {
	o  options
	ac *kafka.AdminClient
	// probes are idle consumers, one per group, that read committed offsets.
	probes  map[string]*kafka.Consumer
	in      string
	ends    []int64 // per input partition, after preload
	self    string  // this binary, re-executed with -child for each trial
	gokaBin string  // the gokabench binary; empty unless goka is a contestant
}

func newEnv(ctx context.Context, o options) (*env, error) {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": o.brokers, "log_level": 3})
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		ac.Close()
		return nil, fmt.Errorf("find this binary to re-execute per trial: %w", err)
	}
	e := &env{o: o, ac: ac, in: stack.UniqueName("bench-in"), self: self}
	if err := e.createTopic(ctx, e.in, o.partitions); err != nil {
		ac.Close()
		return nil, err
	}
	return e, nil
}

func (e *env) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range e.probes {
		c.Close()
	}
	e.deleteTopic(ctx, e.in)
	e.ac.Close()
}

func (e *env) createTopic(ctx context.Context, name string, partitions int) error {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := e.ac.CreateTopics(cctx, []kafka.TopicSpecification{{Topic: name, NumPartitions: partitions, ReplicationFactor: 1}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	if code := res[0].Error.Code(); code != kafka.ErrNoError {
		return fmt.Errorf("create topic %s: %w", name, res[0].Error)
	}
	for {
		md, err := e.ac.GetMetadata(&name, false, 2000)
		if err == nil {
			if tm, ok := md.Topics[name]; ok && len(tm.Partitions) == partitions {
				ready := true
				for _, p := range tm.Partitions {
					ready = ready && p.Leader >= 0
				}
				if ready {
					return nil
				}
			}
		}
		select {
		case <-cctx.Done():
			return fmt.Errorf("topic %s has no leaders: %w", name, cctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (e *env) deleteTopic(ctx context.Context, name string) {
	if _, err := e.ac.DeleteTopics(ctx, []string{name}); err != nil {
		fmt.Fprintf(os.Stderr, "bench: delete topic %s: %v\n", name, err)
	}
}

// key is 12 bytes.
func key(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }

// preload writes the input records with a producer tuned for bulk loading.
func (e *env) preload(ctx context.Context) (time.Duration, error) {
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers":            e.o.brokers,
		"linger.ms":                    50,
		"batch.size":                   1 << 20,
		"batch.num.messages":           100000,
		"queue.buffering.max.messages": 1000000,
		"queue.buffering.max.kbytes":   1 << 20,
		"acks":                         1,
		"enable.idempotence":           false,
		"compression.type":             "none",
		"go.delivery.report.fields":    "none",
		"log_level":                    3,
	})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	var failed atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	go func() {
		defer close(done)
		n := 0
		for ev := range p.Events() {
			if m, ok := ev.(*kafka.Message); ok {
				if m.TopicPartition.Error != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, m.TopicPartition.Error)
				}
				if n++; n == e.o.records {
					return
				}
			}
		}
	}()
	start := time.Now()
	value := inputValue(e.o.valueSize)
	for i := range e.o.records {
		m := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &e.in, Partition: int32(i % e.o.partitions)}, Key: key(i), Value: value}
		for {
			err := p.Produce(m, nil)
			if err == nil {
				break
			}
			if kerr, ok := err.(kafka.Error); ok && kerr.Code() == kafka.ErrQueueFull {
				time.Sleep(time.Millisecond)
				continue
			}
			return 0, err
		}
		if i%100000 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return 0, errors.New("preload: delivery reports timed out")
	}
	took := time.Since(start)
	if n := failed.Load(); n > 0 {
		return 0, fmt.Errorf("preload: %d records failed: %v", n, firstErr.Load())
	}
	e.ends = make([]int64, e.o.partitions)
	var total int64
	for part := range e.o.partitions {
		_, high, err := p.QueryWatermarkOffsets(e.in, int32(part), 10000)
		if err != nil {
			return 0, err
		}
		e.ends[part] = high
		total += high
	}
	if total != int64(e.o.records) {
		return 0, fmt.Errorf("preload: input holds %d records, want %d", total, e.o.records)
	}
	return took, nil
}

// committedSum returns the sum of the group's committed offsets on the input and whether
// every partition reached its end offset. It asks through one idle (never subscribed)
// consumer of the group, kept per group for the run: AdminClient.ListConsumerGroupOffsets
// can crash the process on NOT_COORDINATOR (librdkafka #5040), as right after the broker
// started.
func (e *env) committedSum(ctx context.Context, group string) (int64, bool) {
	c := e.probes[group]
	if c == nil {
		var err error
		c, err = kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": e.o.brokers, "group.id": group, "enable.auto.commit": false, "log_level": 3})
		if err != nil {
			return 0, false
		}
		if e.probes == nil {
			e.probes = map[string]*kafka.Consumer{}
		}
		e.probes[group] = c
	}
	tps := make([]kafka.TopicPartition, e.o.partitions)
	for p := range tps {
		tps[p] = kafka.TopicPartition{Topic: &e.in, Partition: int32(p)}
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = max(time.Until(d), time.Millisecond)
	}
	res, err := c.Committed(tps, int(timeout.Milliseconds()))
	if err != nil {
		return 0, false
	}
	var sum int64
	all := true
	for _, tp := range res {
		if tp.Error != nil || tp.Offset < 0 {
			all = false
			continue
		}
		sum += int64(tp.Offset)
		if int64(tp.Offset) < e.ends[tp.Partition] {
			all = false
		}
	}
	return sum, all && len(res) == e.o.partitions
}

// outputCount sums the high watermarks of an output topic.
func (e *env) outputCount(topic string, partitions int) (int64, error) {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": e.o.brokers, "group.id": "bench-probe", "log_level": 3})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var total int64
	for p := range partitions {
		_, high, err := c.QueryWatermarkOffsets(topic, int32(p), 10000)
		if err != nil {
			return 0, err
		}
		total += high
	}
	return total, nil
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

// contestant is one side of the comparison. run is nil for contestants that are separate
// binaries (goka), which the harness starts itself.
type contestant struct {
	name string
	run  func(ctx context.Context, r run) error
}

var (
	samsaContestant    = contestant{name: "samsa", run: runSamsa}
	baselineContestant = contestant{name: "baseline", run: runBaseline}
	// baseline2G hands full batches to a second goroutine that produces them.
	baseline2G = contestant{name: "baseline-2g", run: runBaseline2G}
	// loopContestant is the baseline at its own fastest settings (see runLoop).
	loopContestant = contestant{name: "loop", run: runLoop}
	// samsaNoCopy is samsa with decoders that do not copy (see noCopy).
	samsaNoCopy = contestant{name: "samsa-nocopy", run: func(ctx context.Context, r run) error {
		r.codec = "nocopy"
		return runSamsa(ctx, r)
	}}
	// samsaOtel is samsa with tracing and metrics on: an SDK tracer provider sampling
	// every span into a batch processor (exported nowhere) and the Prometheus provider.
	samsaOtel = contestant{name: "samsa-otel", run: func(ctx context.Context, r run) error {
		r.otel = true
		return runSamsa(ctx, r)
	}}
	// samsaMetrics and samsaHeader split samsa-otel's cost: metrics alone, and a
	// traceparent-sized header on every output with tracing off (the bytes and the
	// per-record header copies, without spans).
	// samsaTrace1 is samsa with tracing at a parent-based 1% ratio sampler.
	samsaTrace1 = contestant{name: "samsa-trace1", run: func(ctx context.Context, r run) error {
		r.otelRatio = 0.01
		return runSamsa(ctx, r)
	}}
	// samsaTrace is samsa with tracing only, every span sampled.
	samsaTrace = contestant{name: "samsa-trace", run: func(ctx context.Context, r run) error {
		r.traceAll = true
		return runSamsa(ctx, r)
	}}
	// loopHeader is the loop writing the same constant traceparent-sized header as
	// samsa-hdr on every output: what carrying a W3C trace header per record costs any
	// client, whatever frames it.
	loopHeader = contestant{name: "loop-hdr", run: func(ctx context.Context, r run) error {
		r.header = true
		return runLoop(ctx, r)
	}}
	samsaMetrics = contestant{name: "samsa-metrics", run: func(ctx context.Context, r run) error {
		r.metricsOnly = true
		return runSamsa(ctx, r)
	}}
	samsaHeader = contestant{name: "samsa-hdr", run: func(ctx context.Context, r run) error {
		r.header = true
		return runSamsa(ctx, r)
	}}
	// gokaContestant is the gokabench binary (integration/gokabench, its own module).
	gokaContestant = contestant{name: "goka"}
	// samsaBefore is samsa as built into the -before binary: this harness built from an
	// earlier commit, for a before/after comparison in one interleaved run.
	samsaBefore = contestant{name: "samsa-before", run: runSamsa}
)

func findContestant(name string) (contestant, bool) {
	for _, c := range []contestant{baselineContestant, baseline2G, loopContestant, samsaContestant, samsaNoCopy, samsaOtel, samsaTrace, samsaTrace1, samsaMetrics, loopHeader, samsaHeader, gokaContestant, samsaBefore} {
		if c.name == name {
			return c, true
		}
	}
	return contestant{}, false
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

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// profiles names the profiles to write around a trial; empty: none.
type profiles struct{ cpu, mem, block string }

func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("allocs").WriteTo(f, 0)
}

// trial runs one contestant in a child process over the whole input with a fresh group
// and output topic, stops it once the group's committed offsets reach the input's end
// offsets, and then reads the output back (see verify).
func (e *env) trial(ctx context.Context, c contestant, v variant, prof profiles) (result, error) {
	out := stack.UniqueName("bench-out")
	if err := e.createTopic(ctx, out, e.o.partitions); err != nil {
		return result{}, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e.deleteTopic(dctx, out)
	}()
	group := stack.UniqueName("bench-" + c.name)
	path, args := e.gokaBin, e.gokaArgs(group, out, e.o.commitInterval)
	if c.run != nil {
		name, self := c.name, e.self
		if c.name == samsaBefore.name {
			name, self = samsaContestant.name, e.o.before
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
	ch, err := startChild(c.name, path, args...)
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
