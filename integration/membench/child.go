package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
)

// The child is this binary re-executed with -child <JSON childSpec>. It runs one processor
// for Duration, then cancels it and waits for Run to return. It writes progress to stderr
// and, last, one line "membench-result <JSON childResult>" to stdout; it exits 1 when Run
// failed.

const resultPrefix = "membench-result "

type childSpec struct {
	Brokers, Group, In, Out string
	Duration                time.Duration
	Records                 int // the input's records, to note when all are handled; 0: idle
	MaxBufferedBytes        int64
	BatchSize, MaxInFlight  int
	QueuedKBytes            int // 0: samsa's default
}

type childResult struct {
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

// runChild runs spec in a child process of self and returns its figures. The child is
// stopped by its PID (SIGTERM, then SIGKILL) if ctx ends or it overruns its duration by
// two minutes.
func runChild(ctx context.Context, self string, spec childSpec) (childResult, error) {
	js, err := json.Marshal(spec)
	if err != nil {
		return childResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Duration+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "-child", string(js))
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 45 * time.Second
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	runErr := cmd.Run()
	var res childResult
	found := false
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), resultPrefix); ok {
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				return res, fmt.Errorf("child result: %w", err)
			}
			found = true
		}
	}
	if runErr != nil {
		return res, fmt.Errorf("child (pid %d): %w", cmd.Process.Pid, runErr)
	}
	if !found {
		return res, fmt.Errorf("child (pid %d) printed no result", cmd.Process.Pid)
	}
	return res, nil
}

func childMain(specJSON string) int {
	var s childSpec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fmt.Fprintln(os.Stderr, "membench child: -child:", err)
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
			st, _ := readStatus()
			rssFirst.Store(st.rss)
		})
		time.Sleep(time.Duration(len(b.Records)) * time.Millisecond)
		for _, r := range b.Records {
			if err := out.Send(b, r.Key, r.Value); err != nil {
				return err
			}
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
		fmt.Fprintln(os.Stderr, "membench child:", err)
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

	res := childResult{
		Handled: handled.Load(), PeakRSS: max(smp.peakRSS, smp.hwm), PeakRSSAt: smp.peakRSSAt,
		PeakHeap: smp.peakHeap, PeakLiveHeap: smp.peakLive, PeakGoMapped: smp.peakGo, PeakCMalloc: smp.peakC, PeakCHeld: smp.peakCHeld,
		RSSAtFirstBatch: rssFirst.Load(), AllHandledAfter: time.Duration(allAfter.Load()),
		PeakInFlight: smp.peakInFlight, PeakInFlightAt: smp.peakInFlightAt,
	}
	if fb := firstBatch.Load(); fb > 0 && !smp.firstSettled.IsZero() {
		res.FirstSettledAfter = smp.firstSettled.Sub(time.Unix(0, fb))
	}
	js, _ := json.Marshal(res)
	fmt.Printf("%s%s\n", resultPrefix, js)
	if runErr != nil {
		fmt.Fprintln(os.Stderr, "membench child: Run:", runErr)
		return 1
	}
	if smp.err != nil {
		fmt.Fprintln(os.Stderr, "membench child: sampling:", smp.err)
		return 1
	}
	return 0
}

// sampler keeps the peaks of the process's memory figures. It is used by one goroutine
// at a time.
type sampler struct {
	start   time.Time
	reader  *sdkmetric.ManualReader
	handled *atomic.Int64
	rm      metricdata.ResourceMetrics

	last      memSample
	hwm       int64
	peakRSS   int64
	peakRSSAt time.Duration
	peakHeap  int64
	peakLive  int64
	peakGo    int64
	peakC     int64
	peakCHeld int64
	err       error

	peakInFlight   int64
	peakInFlightAt time.Duration
	firstSettled   time.Time
}

type memSample struct{ rss, heap, goMapped, cMalloc, cHeld, inFlight int64 }

var metricNames = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/gc/heap/live:bytes",
}

func (s *sampler) sample() {
	sent := s.handled.Load() // before the acks: inFlight is never negative
	st, err := readStatus()
	if err != nil {
		s.err = err
		return
	}
	ms := make([]metrics.Sample, len(metricNames))
	for i, n := range metricNames {
		ms[i].Name = n
	}
	metrics.Read(ms)
	u := func(i int) int64 { return int64(ms[i].Value.Uint64()) }
	m := memSample{rss: st.rss, heap: u(0), goMapped: u(1) - u(2), cMalloc: -1, cHeld: -1}
	if c, held, ok := cMalloc(); ok {
		m.cMalloc, m.cHeld = c, held
	}
	if acked, ok := s.acked(); ok {
		m.inFlight = sent - acked
		if acked > 0 && s.firstSettled.IsZero() {
			s.firstSettled = time.Now()
		}
	}
	s.last = m
	if m.inFlight > s.peakInFlight {
		s.peakInFlight, s.peakInFlightAt = m.inFlight, time.Since(s.start)
	}
	s.hwm = max(s.hwm, st.hwm)
	if m.rss > s.peakRSS {
		s.peakRSS, s.peakRSSAt = m.rss, time.Since(s.start)
	}
	s.peakHeap = max(s.peakHeap, m.heap)
	s.peakLive = max(s.peakLive, u(3))
	s.peakGo = max(s.peakGo, m.goMapped)
	if m.cMalloc < 0 || s.peakC < 0 {
		s.peakC, s.peakCHeld = -1, -1
	} else {
		s.peakC, s.peakCHeld = max(s.peakC, m.cMalloc), max(s.peakCHeld, m.cHeld)
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

type procStatus struct{ rss, hwm int64 }

// readStatus reads VmRSS and VmHWM (kB) from /proc/self/status.
func readStatus() (procStatus, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return procStatus{}, err
	}
	var st procStatus
	for line := range strings.Lines(string(b)) {
		var dst *int64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			dst = &st.rss
		case strings.HasPrefix(line, "VmHWM:"):
			dst = &st.hwm
		default:
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return st, fmt.Errorf("/proc/self/status: %q", line)
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return st, fmt.Errorf("/proc/self/status: %q: %w", line, err)
		}
		*dst = kb * 1024
	}
	if st.rss == 0 || st.hwm == 0 {
		return st, errors.New("/proc/self/status has no VmRSS or VmHWM")
	}
	return st, nil
}
