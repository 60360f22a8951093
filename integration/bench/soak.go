package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/metrics"
	"github.com/samsa-go/samsa/processor"
)

type soakOptions struct {
	input
	duration, warmup, sample time.Duration
	rate                     int
}

// soakMain runs the soak scenario and returns the exit code.
func soakMain(args []string) int {
	var o soakOptions
	fs := o.flagSet("soak", 0, 8, 100)
	fs.DurationVar(&o.duration, "duration", 30*time.Minute, "how long to run")
	fs.DurationVar(&o.warmup, "warmup", 0, "growth is measured after this (default: a third of -duration, at most 10m)")
	fs.IntVar(&o.rate, "rate", 10_000, "input records per second")
	fs.DurationVar(&o.sample, "sample", 10*time.Second, "sampling interval")
	fs.Parse(args)
	if o.warmup == 0 {
		// RSS climbs to its working set for minutes at the default rate: a third of
		// the run, at most 10 minutes, leaves that climb out of the growth figures.
		o.warmup = min(o.duration/3, 10*time.Minute)
	}
	if err := o.check(); err != nil {
		return o.usageError(err)
	}
	return o.run(func(ctx context.Context) (*summary, error) { return soakRun(ctx, o) })
}

func (o soakOptions) check() error {
	var errs []error
	if o.duration <= 0 || o.sample <= 0 || o.warmup < 0 || o.warmup >= o.duration {
		errs = append(errs, fmt.Errorf("-duration (%s) and -sample (%s) must be positive and -warmup (%s) below -duration", o.duration, o.sample, o.warmup))
	}
	if o.rate <= 0 || o.partitions <= 0 || o.valueSize < 0 {
		errs = append(errs, fmt.Errorf("-rate (%d) and -partitions (%d) must be positive, -value-size (%d) not negative", o.rate, o.partitions, o.valueSize))
	}
	return errors.Join(errs...)
}

type soakSample struct {
	at         time.Duration
	rss        float64
	goroutines float64
	heap       float64
	goSys      float64 // go_memstats_sys_bytes − go_memstats_heap_released_bytes: what the Go runtime holds mapped
	consumed   float64
	lag        float64
	produced   int64
}

func soakRun(ctx context.Context, o soakOptions) (*summary, error) {
	in, out, group := stack.UniqueName("soak-in"), stack.UniqueName("soak-out"), stack.UniqueName("soak")
	_, note, done, err := o.setUp(ctx, "", -1, in, out)
	if err != nil {
		return nil, err
	}
	defer done()

	prom, err := metrics.NewPrometheus("soak")
	if err != nil {
		return nil, err
	}
	defer prom.Shutdown(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: prom.Handler()}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/metrics"

	tracing := "OTLP to $OTEL_EXPORTER_OTLP_ENDPOINT"
	tp, err := metrics.NewTracing(ctx, "soak", "")
	if errors.Is(err, metrics.ErrNoEndpoint) {
		tracing = "recorded, dropped by the exporter (no $OTEL_EXPORTER_OTLP_ENDPOINT)"
		tp, err = sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{})), nil
	}
	if err != nil {
		return nil, err
	}
	defer tp.Shutdown(context.Background())

	output := processor.NewOutput(out, codec.Bytes(), codec.Bytes())
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: o.brokers}, Group: group},
		[]processor.Input[[]byte, []byte]{{Topic: in, Key: codec.Bytes(), Value: codec.Bytes()}},
		processor.HandlerFunc[[]byte, []byte](func(_ context.Context, b *processor.Batch[[]byte, []byte]) error {
			return sendAll(output, b)
		}),
		processor.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		processor.WithMeterProvider(prom.Provider), processor.WithTracerProvider(tp))
	if err != nil {
		return nil, err
	}
	fmt.Printf("soak: %s at %d records/s, %d partitions, %d-byte values; tracing: %s; metrics: %s; brokers %s\n",
		o.duration, o.rate, o.partitions, o.valueSize, tracing, url, o.brokers)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx) }()
	var produced atomic.Int64
	prodErr := make(chan error, 1)
	go func() { prodErr <- produce(runCtx, o, in, &produced) }()

	start := time.Now()
	var samples []soakSample
	tick := time.NewTicker(o.sample)
	defer tick.Stop()
	fmt.Println("      t   rss_MiB  heap_MiB    go_MiB  goroutines    consumed    produced      lag")
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case err := <-runErr:
			return nil, fmt.Errorf("processor stopped: %v", err)
		case err := <-prodErr:
			if err != nil {
				return nil, fmt.Errorf("input producer: %w", err)
			}
		case <-tick.C:
			s, err := scrape(url)
			if err != nil {
				return nil, err
			}
			s.at, s.produced = time.Since(start), produced.Load()
			samples = append(samples, s)
			fmt.Printf("%7s %9.1f %9.1f %9.1f %11.0f %11.0f %11d %8.0f\n", s.at.Round(time.Second), s.rss/(1<<20), s.heap/(1<<20), s.goSys/(1<<20), s.goroutines, s.consumed, s.produced, s.lag)
			done = s.at >= o.duration
		}
	}
	cancel()
	if err := <-runErr; err != nil {
		return nil, fmt.Errorf("processor: %w", err)
	}
	return summarize(o, note, samples), nil
}

// produce writes rate records per second (in 10 ms steps) until ctx ends.
func produce(ctx context.Context, o soakOptions, topic string, produced *atomic.Int64) error {
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": o.brokers, "linger.ms": 5, "log_level": 3})
	if err != nil {
		return err
	}
	defer p.Close()
	go func() {
		for ev := range p.Events() {
			if m, ok := ev.(*kafka.Message); ok && m.TopicPartition.Error != nil {
				fmt.Fprintln(os.Stderr, "soak: input not delivered:", m.TopicPartition.Error)
			}
		}
	}()
	value := make([]byte, o.valueSize)
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var n int64
	for {
		select {
		case <-ctx.Done():
			p.Flush(5000)
			return nil
		case <-tick.C:
		}
		due := int64(time.Since(start).Seconds() * float64(o.rate))
		for ; n < due; n++ {
			key := strconv.AppendInt(nil, n%10_000, 10)
			for p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny}, Key: key, Value: value}, nil) != nil {
				if ctx.Err() != nil {
					return nil
				}
				p.Flush(10) // local queue full
			}
			produced.Add(1)
		}
	}
}

// scrape reads the metrics the soak follows from the processor's /metrics endpoint.
func scrape(url string) (soakSample, error) {
	resp, err := http.Get(url)
	if err != nil {
		return soakSample{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return soakSample{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	var s soakSample
	seen := map[string]bool{}
	sampleRe := regexp.MustCompile(`(?m)^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$`)
	for _, m := range sampleRe.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[3], 64)
		seen[m[1]] = true
		switch m[1] {
		case "process_resident_memory_bytes":
			s.rss = v
		case "go_goroutines":
			s.goroutines = v
		case "go_memstats_heap_inuse_bytes":
			s.heap = v
		case "go_memstats_sys_bytes":
			s.goSys += v
		case "go_memstats_heap_released_bytes":
			s.goSys -= v
		case "samsa_records_consumed_total":
			s.consumed += v
		case "samsa_consumer_lag":
			s.lag += v
		}
	}
	for _, name := range []string{"process_resident_memory_bytes", "go_goroutines", "go_memstats_sys_bytes", "go_memstats_heap_released_bytes"} {
		if !seen[name] {
			return soakSample{}, fmt.Errorf("scrape %s: no %s in the metrics", url, name)
		}
	}
	return s, nil
}

func summarize(o soakOptions, broker string, samples []soakSample) *summary {
	var after []soakSample
	for _, s := range samples {
		if s.at >= o.warmup {
			after = append(after, s)
		}
	}
	sum := &summary{about: []string{"broker: " + broker, fmt.Sprintf(
		"soak: %d records/s, %d partitions, %d-byte values, warm-up %s, %d samples after it",
		o.rate, o.partitions, o.valueSize, o.warmup, len(after))}}
	if len(after) < 2 {
		sum.about = append(sum.about, "only these samples after the warm-up: run longer for growth figures")
		return sum
	}
	first, last := after[0], after[len(after)-1]
	maxRSS, maxG := 0.0, 0.0
	for _, s := range after {
		maxRSS, maxG = max(maxRSS, s.rss), max(maxG, s.goroutines)
	}
	rss := func(s soakSample) float64 { return s.rss }
	goSys := func(s soakSample) float64 { return s.goSys }
	outside := func(s soakSample) float64 { return s.rss - s.goSys }
	half := after[len(after)/2:]
	m := func(f float64) string { return fmt.Sprintf("%.1f", f/(1<<20)) }
	slope := func(ss []soakSample, f func(soakSample) float64) string {
		return fmt.Sprintf("%+.1f", mibPerHour(ss, f))
	}
	title := fmt.Sprintf("after the warm-up, over %s (MiB; slopes: least squares, MiB/h):", last.at.Round(time.Second))
	t := sum.table(title, "figure", "after warm-up", "end", "max", "growth", "slope", "slope, second half")
	t.add("RSS", m(first.rss), m(last.rss), m(maxRSS), fmt.Sprintf("%+.1f", (last.rss-first.rss)/(1<<20)),
		slope(after, rss), slope(half, rss))
	t.add("Go heap in use", m(first.heap), m(last.heap), "-", "-", "-", "-")
	t.add("Go mapped (sys − heap released)", m(first.goSys), m(last.goSys), "-", "-", slope(after, goSys), "-")
	t.add("RSS − Go mapped (at least: librdkafka, cgo, binary)", m(outside(first)), m(outside(last)), "-", "-",
		slope(after, outside), slope(half, outside))
	count := func(f float64) string { return fmt.Sprintf("%.0f", f) }
	t.add("goroutines", count(first.goroutines), count(last.goroutines), count(maxG), "-", "-", "-")
	t.note("records produced %d, consumed %.0f, final lag %.0f", last.produced, last.consumed, last.lag)
	return sum
}

// mibPerHour is the least-squares slope of f (bytes) over time, in MiB per hour.
func mibPerHour(ss []soakSample, f func(soakSample) float64) float64 {
	if len(ss) < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for _, s := range ss {
		x, y := s.at.Hours(), f(s)/(1<<20)
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	n := float64(len(ss))
	return (n*sxy - sx*sy) / (n*sxx - sx*sx)
}
