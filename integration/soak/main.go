// Command soak runs one processor for a long time at a steady input rate with tracing and
// metrics on, and samples its resident memory, goroutines and lag, to show whether
// anything grows. It prints one line per sample and a summary of growth after the
// warm-up; it asserts nothing (a figure, not a test).
//
// Usage (`make soak` runs it for 30 minutes on the stack, with Jaeger):
//
//	go run ./integration/soak [-duration 30m] [-rate 10000] [-partitions 8] [-sample 10s]
//
// It uses $KAFKA_BROKERS (or -brokers), else starts a single-node Kafka with
// integration/stack. Spans go to $OTEL_EXPORTER_OTLP_ENDPOINT (Jaeger) when it is set;
// otherwise every span is still recorded by the OTel SDK and handed to a batching
// exporter that drops it, so tracing costs what it would. Metrics are the Prometheus
// provider of package metrics, served on 127.0.0.1; the sampler scrapes that endpoint
// over HTTP, as Prometheus would: process_resident_memory_bytes, go_goroutines,
// go_memstats_heap_inuse_bytes, go_memstats_sys_bytes, go_memstats_heap_released_bytes,
// samsa_records_consumed_total and samsa_consumer_lag. The Go runtime's mapped memory
// (sys minus what it released to the OS; it may include reserved pages never touched, so
// it is an upper bound of the Go share of RSS) is printed beside RSS, and RSS minus it
// bounds from below what lies outside the Go runtime (librdkafka and other C
// allocations, the binary), so growth can be told apart.
//
// # What the summary says
//
// RSS and goroutines at the end of the warm-up (-warmup, default a third of the
// duration, at most 10 minutes) and at the end, their maxima after the warm-up, and the RSS slope after it
// and over the second half of it (least squares, MiB per hour: a short run's first slope
// still includes the climb to the working set); records produced and consumed and the
// final lag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/metrics"
	"github.com/samsa-go/samsa/processor"
)

type options struct {
	brokers    string
	duration   time.Duration
	warmup     time.Duration
	rate       int
	partitions int
	valueSize  int
	sample     time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.brokers, "brokers", os.Getenv(stack.EnvKafkaBrokers), "bootstrap servers (default $KAFKA_BROKERS); empty: start a single-node Kafka")
	flag.DurationVar(&o.duration, "duration", 30*time.Minute, "how long to run")
	flag.DurationVar(&o.warmup, "warmup", 0, "growth is measured after this (default: a third of -duration, at most 10m)")
	flag.IntVar(&o.rate, "rate", 10_000, "input records per second")
	flag.IntVar(&o.partitions, "partitions", 8, "partitions of the input and output topics")
	flag.IntVar(&o.valueSize, "value-size", 100, "bytes per input value")
	flag.DurationVar(&o.sample, "sample", 10*time.Second, "sampling interval")
	flag.Parse()
	if o.warmup == 0 {
		// At 10,000 records/s RSS climbed to its working set for about 5 minutes, so a
		// tenth of a 30-minute run counted that climb as growth.
		o.warmup = min(o.duration/3, 10*time.Minute)
	}
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func (o options) check() error {
	var errs []error
	if o.duration <= 0 || o.sample <= 0 || o.warmup < 0 || o.warmup >= o.duration {
		errs = append(errs, fmt.Errorf("-duration (%s) and -sample (%s) must be positive and -warmup (%s) below -duration", o.duration, o.sample, o.warmup))
	}
	if o.rate <= 0 || o.partitions <= 0 || o.valueSize < 0 {
		errs = append(errs, fmt.Errorf("-rate (%d) and -partitions (%d) must be positive, -value-size (%d) not negative", o.rate, o.partitions, o.valueSize))
	}
	return errors.Join(errs...)
}

type sample struct {
	at         time.Duration
	rss        float64
	goroutines float64
	heap       float64
	goSys      float64 // go_memstats_sys_bytes − go_memstats_heap_released_bytes: what the Go runtime holds mapped
	consumed   float64
	lag        float64
	produced   int64
}

func run(ctx context.Context, o options) error {
	if o.brokers == "" {
		fmt.Println("soak: starting a single-node Kafka (stack.StartKafka)...")
		sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		k, err := stack.StartKafka(sctx, stack.KafkaOptions{})
		cancel()
		if err != nil {
			return err
		}
		defer k.Close()
		o.brokers = k.Bootstrap()
	}
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": o.brokers, "log_level": 3})
	if err != nil {
		return err
	}
	defer ac.Close()
	in, out, group := stack.UniqueName("soak-in"), stack.UniqueName("soak-out"), stack.UniqueName("soak")
	if err := createTopics(ctx, ac, o.partitions, in, out); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ac.DeleteTopics(dctx, []string{in, out})
	}()

	prom, err := metrics.NewPrometheus("soak")
	if err != nil {
		return err
	}
	defer prom.Shutdown(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: prom.Handler()}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/metrics"

	tracing := "OTLP to $OTEL_EXPORTER_OTLP_ENDPOINT"
	tp, err := metrics.NewTracing(ctx, "soak", "")
	if errors.Is(err, metrics.ErrNoEndpoint) {
		tracing = "recorded, dropped by the exporter (no $OTEL_EXPORTER_OTLP_ENDPOINT)"
		tp, err = sdktrace.NewTracerProvider(sdktrace.WithBatcher(dropExporter{})), nil
	}
	if err != nil {
		return err
	}
	defer tp.Shutdown(context.Background())

	output := processor.NewOutput(out, codec.Bytes(), codec.Bytes())
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: o.brokers}, Group: group},
		[]processor.Input[[]byte, []byte]{{Topic: in, Key: codec.Bytes(), Value: codec.Bytes()}},
		processor.HandlerFunc[[]byte, []byte](func(_ context.Context, b *processor.Batch[[]byte, []byte]) error {
			for _, r := range b.Records {
				if err := output.Send(b, r.Key, r.Value); err != nil {
					return err
				}
			}
			return nil
		}),
		processor.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		processor.WithMeterProvider(prom.Provider), processor.WithTracerProvider(tp))
	if err != nil {
		return err
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
	var samples []sample
	tick := time.NewTicker(o.sample)
	defer tick.Stop()
	fmt.Println("      t   rss_MiB  heap_MiB    go_MiB  goroutines    consumed    produced      lag")
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case err := <-runErr:
			return fmt.Errorf("processor stopped: %v", err)
		case err := <-prodErr:
			if err != nil {
				return fmt.Errorf("input producer: %w", err)
			}
		case <-tick.C:
			s, err := scrape(url)
			if err != nil {
				return err
			}
			s.at, s.produced = time.Since(start), produced.Load()
			samples = append(samples, s)
			fmt.Printf("%7s %9.1f %9.1f %9.1f %11.0f %11.0f %11d %8.0f\n", s.at.Round(time.Second), s.rss/(1<<20), s.heap/(1<<20), s.goSys/(1<<20), s.goroutines, s.consumed, s.produced, s.lag)
			done = s.at >= o.duration
		}
	}
	cancel()
	if err := <-runErr; err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	summarize(o, samples)
	return nil
}

func createTopics(ctx context.Context, ac *kafka.AdminClient, partitions int, names ...string) error {
	var specs []kafka.TopicSpecification
	for _, n := range names {
		specs = append(specs, kafka.TopicSpecification{Topic: n, NumPartitions: partitions, ReplicationFactor: -1})
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := ac.CreateTopics(cctx, specs)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for _, r := range res {
		if r.Error.Code() != kafka.ErrNoError {
			return fmt.Errorf("create topic %s: %v", r.Topic, r.Error)
		}
	}
	time.Sleep(time.Second) // leaders elected
	return nil
}

// produce writes rate records per second (in 10 ms steps) until ctx ends.
func produce(ctx context.Context, o options, topic string, produced *atomic.Int64) error {
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

var sampleRe = regexp.MustCompile(`(?m)^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$`)

// scrape reads the metrics the soak follows from the processor's /metrics endpoint.
func scrape(url string) (sample, error) {
	resp, err := http.Get(url)
	if err != nil {
		return sample{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return sample{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	var s sample
	seen := map[string]bool{}
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
			return sample{}, fmt.Errorf("scrape %s: no %s in the metrics", url, name)
		}
	}
	return s, nil
}

func summarize(o options, samples []sample) {
	var after []sample
	for _, s := range samples {
		if s.at >= o.warmup {
			after = append(after, s)
		}
	}
	if len(after) < 2 {
		fmt.Printf("soak: only %d samples after the %s warm-up: run longer for growth figures\n", len(after), o.warmup)
		return
	}
	first, last := after[0], after[len(after)-1]
	maxRSS, maxG := 0.0, 0.0
	for _, s := range after {
		maxRSS, maxG = max(maxRSS, s.rss), max(maxG, s.goroutines)
	}
	rss := func(s sample) float64 { return s.rss }
	outside := func(s sample) float64 { return s.rss - s.goSys }
	slope, late := mibPerHour(after, rss), mibPerHour(after[len(after)/2:], rss)
	fmt.Printf("soak: duration=%s rate=%d/s warmup=%s samples_after_warmup=%d\n", last.at.Round(time.Second), o.rate, o.warmup, len(after))
	fmt.Printf("soak: rss_MiB after_warmup=%.1f end=%.1f max=%.1f growth=%+.1f slope=%+.1f MiB/h (second half: %+.1f MiB/h)\n",
		first.rss/(1<<20), last.rss/(1<<20), maxRSS/(1<<20), (last.rss-first.rss)/(1<<20), slope, late)
	fmt.Printf("soak: heap_inuse_MiB after_warmup=%.1f end=%.1f\n", first.heap/(1<<20), last.heap/(1<<20))
	fmt.Printf("soak: go_MiB (mapped by the Go runtime: sys − heap released) after_warmup=%.1f end=%.1f slope=%+.1f MiB/h\n", first.goSys/(1<<20), last.goSys/(1<<20), mibPerHour(after, func(s sample) float64 { return s.goSys }))
	fmt.Printf("soak: rss_minus_go_MiB (at least: librdkafka, cgo, binary) after_warmup=%.1f end=%.1f slope=%+.1f MiB/h (second half: %+.1f MiB/h)\n",
		outside(first)/(1<<20), outside(last)/(1<<20), mibPerHour(after, outside), mibPerHour(after[len(after)/2:], outside))
	fmt.Printf("soak: goroutines after_warmup=%.0f end=%.0f max=%.0f\n", first.goroutines, last.goroutines, maxG)
	fmt.Printf("soak: records produced=%d consumed=%.0f final_lag=%.0f\n", last.produced, last.consumed, last.lag)
}

// mibPerHour is the least-squares slope of f (bytes) over time, in MiB per hour.
func mibPerHour(ss []sample, f func(sample) float64) float64 {
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

// dropExporter takes every span and drops it.
type dropExporter struct{}

func (dropExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (dropExporter) Shutdown(context.Context) error                             { return nil }
