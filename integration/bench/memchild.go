package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
)

// The mem scenario's child is this binary re-executed as "mem -child <JSON memSpec>". It
// runs one processor for Duration, then cancels it and waits for Run to return. It writes
// progress to stderr and, last, one line "result <JSON memResult>" to stdout; it exits 1
// when Run failed.

type memSpec struct {
	Brokers, Group, In, Out string
	Duration                time.Duration
	Records                 int // the input's records, to note when all are handled; 0: idle
	MaxBufferedBytes        int64
	BatchSize, MaxInFlight  int
	QueuedKBytes            int // 0: samsa's default
}

type memResult struct {
	Handled           int64
	PeakRSS           int64         // max of sampled VmRSS and the final VmHWM
	PeakRSSAt         time.Duration // since the child started, of the sampled peak
	PeakHeap          int64         // /memory/classes/heap/objects:bytes
	PeakLiveHeap      int64         // /gc/heap/live:bytes: marked live by the last GC
	PeakGoMapped      int64         // /memory/classes/total:bytes − heap/released (not all resident)
	PeakCMalloc       int64         // glibc malloc in use (librdkafka); -1 when unknown
	PeakCHeld         int64         // glibc malloc held from the OS, freed blocks included; -1 when unknown
	RSSAtFirstBatch   int64
	PeakInFlight      int64 // outputs sent by the handler, their batch not yet settled (acknowledged, offset stored)
	PeakInFlightAt    time.Duration
	AllHandledAfter   time.Duration // from the first batch; 0 when not all were handled
	FirstSettledAfter time.Duration // from the first batch to the first sample that saw a settled batch (250 ms resolution)
}

// runMemChild runs spec in a child process of self and returns its figures. The child
// is stopped (SIGTERM, then SIGKILL after 45 s) if ctx ends or it overruns its duration by
// two minutes.
func runMemChild(ctx context.Context, self string, spec memSpec) (memResult, error) {
	js, err := json.Marshal(spec)
	if err != nil {
		return memResult{}, err
	}
	ch, err := startChild("mem child", os.Stderr, self, "mem", "-child", string(js))
	if err != nil {
		return memResult{}, err
	}
	defer ch.kill()
	select {
	case <-ch.done:
		err = ch.exitErr()
	case <-ctx.Done():
		err = errors.Join(ctx.Err(), ch.stop(45*time.Second))
	case <-time.After(spec.Duration + 2*time.Minute):
		err = errors.Join(errors.New("overran its duration by 2m"), ch.stop(45*time.Second))
	}
	if err != nil {
		return memResult{}, err
	}
	var res memResult
	ch.mu.Lock()
	js2 := ch.result
	ch.mu.Unlock()
	if js2 == "" {
		return res, fmt.Errorf("child (pid %d) printed no result", ch.pid())
	}
	return res, json.Unmarshal([]byte(js2), &res)
}

// memChild runs one measured processor in this process and returns the exit code.
func memChild(specJSON string) int {
	var s memSpec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fmt.Fprintln(os.Stderr, "bench mem child: -child:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	start := time.Now()
	var (
		handled    atomic.Int64
		firstBatch atomic.Int64 // unix ns
		rssFirst   atomic.Int64
		allAfter   atomic.Int64 // ns after the first batch
		firstOnce  sync.Once
	)
	out := processor.NewOutput(s.Out, codec.Bytes(), codec.Bytes())
	h := processor.HandlerFunc[[]byte, []byte](func(ctx context.Context, b *processor.Batch[[]byte, []byte]) error {
		firstOnce.Do(func() {
			firstBatch.Store(time.Now().UnixNano())
			rssFirst.Store(procStatus("/proc/self/status", "VmRSS:")[0])
		})
		time.Sleep(time.Duration(len(b.Records)) * time.Millisecond)
		if err := sendAll(out, b); err != nil {
			return err
		}
		if n := handled.Add(int64(len(b.Records))); s.Records > 0 && n >= int64(s.Records) {
			allAfter.CompareAndSwap(0, time.Now().UnixNano()-firstBatch.Load())
		}
		return nil
	})
	cfg := processor.Config{
		Membership: processor.Membership{Brokers: s.Brokers}, Group: s.Group,
		BatchSize: s.BatchSize, MaxInFlightBatches: s.MaxInFlight, MaxBufferedBytes: s.MaxBufferedBytes,
	}
	if s.QueuedKBytes > 0 {
		cfg.ConsumerOverrides = map[string]any{"queued.max.messages.kbytes": s.QueuedKBytes}
	}
	// The processor's own counter of acknowledged outputs, added to when a batch settles
	// (every output acknowledged, offset stored, the batch released), read every sample,
	// tells how many outputs are in flight: the third term of the budget.
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	p, err := processor.New(cfg, []processor.Input[[]byte, []byte]{{Topic: s.In, Key: codec.Bytes(), Value: codec.Bytes()}}, h,
		processor.WithMeterProvider(mp))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench mem child:", err)
		return 1
	}

	smp := &sampler{start: start, reader: reader, handled: &handled}
	smp.sample()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-done:
				return
			case <-tick.C:
				smp.sample()
				if i%20 == 0 { // every 5 s
					fmt.Fprintf(os.Stderr, "    t=%4.1fs  RSS %6s MiB  Go heap %6s MiB  C malloc %6s MiB  handled %6d  in flight %6d\n",
						time.Since(start).Seconds(), mib(smp.last.rss), mib(smp.last.heap), cmib(smp.last.cMalloc), handled.Load(), smp.last.inFlight)
				}
			}
		}
	})

	rctx, cancel := context.WithTimeout(ctx, s.Duration)
	runErr := p.Run(rctx)
	cancel()
	close(done)
	wg.Wait()
	smp.sample()

	res := smp.res
	res.PeakRSS = max(res.PeakRSS, smp.hwm)
	res.Handled, res.RSSAtFirstBatch, res.AllHandledAfter = handled.Load(), rssFirst.Load(), time.Duration(allAfter.Load())
	if fb := firstBatch.Load(); fb > 0 && !smp.firstSettled.IsZero() {
		res.FirstSettledAfter = smp.firstSettled.Sub(time.Unix(0, fb))
	}
	js, _ := json.Marshal(res)
	fmt.Printf("result %s\n", js)
	if runErr != nil {
		fmt.Fprintln(os.Stderr, "bench mem child: Run:", runErr)
		return 1
	}
	if smp.err != nil {
		fmt.Fprintln(os.Stderr, "bench mem child: sampling:", smp.err)
		return 1
	}
	return 0
}

// sampler keeps the peaks of the process's memory figures in res. It is used by one
// goroutine at a time.
type sampler struct {
	start        time.Time
	reader       *sdkmetric.ManualReader
	handled      *atomic.Int64
	rm           metricdata.ResourceMetrics
	res          memResult // PeakRSS: of the sampled VmRSS only
	hwm          int64
	last         memSample
	firstSettled time.Time
	err          error
}

type memSample struct{ rss, heap, cMalloc, inFlight int64 }

func (s *sampler) sample() {
	sent := s.handled.Load() // before the acks: inFlight is never negative
	st := procStatus("/proc/self/status", "VmRSS:", "VmHWM:")
	if st[0] == 0 || st[1] == 0 {
		s.err = errors.New("/proc/self/status has no VmRSS or VmHWM")
		return
	}
	ms := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(ms)
	u := func(i int) int64 { return int64(ms[i].Value.Uint64()) }
	inUse, held, ok := cMalloc()
	m := memSample{rss: st[0], heap: u(0), cMalloc: -1}
	if ok {
		m.cMalloc = inUse
	}
	if acked, ok := s.acked(); ok {
		m.inFlight = sent - acked
		if acked > 0 && s.firstSettled.IsZero() {
			s.firstSettled = time.Now()
		}
	}
	s.last = m
	r, at := &s.res, time.Since(s.start)
	if m.inFlight > r.PeakInFlight {
		r.PeakInFlight, r.PeakInFlightAt = m.inFlight, at
	}
	if m.rss > r.PeakRSS {
		r.PeakRSS, r.PeakRSSAt = m.rss, at
	}
	s.hwm = max(s.hwm, st[1])
	r.PeakHeap, r.PeakLiveHeap = max(r.PeakHeap, m.heap), max(r.PeakLiveHeap, u(3))
	r.PeakGoMapped = max(r.PeakGoMapped, u(1)-u(2))
	if !ok || r.PeakCMalloc < 0 {
		r.PeakCMalloc, r.PeakCHeld = -1, -1
	} else {
		r.PeakCMalloc, r.PeakCHeld = max(r.PeakCMalloc, inUse), max(r.PeakCHeld, held)
	}
}

// acked sums the processor's samsa.records.produced counter (outputs of settled batches).
func (s *sampler) acked() (int64, bool) {
	if err := s.reader.Collect(context.Background(), &s.rm); err != nil {
		return 0, false
	}
	var n int64
	for _, sm := range s.rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "samsa.records.produced" {
				for _, dp := range sum.DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n, true
}
