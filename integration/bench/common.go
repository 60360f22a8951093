package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
)

// Pieces every scenario shares: the broker, topics, preloading, committed offsets,
// figures and flags.

// input holds what every scenario has: its name, the shared flags and the input's shape.
type input struct {
	scenario   string
	brokers    string
	results    string
	records    int
	partitions int
	valueSize  int
	// -trials, -batch and -trial-timeout, for the scenarios that call trialFlags
	trials, batch int
	trialTimeout  time.Duration
}

// flagSet returns the flags of scenario with -brokers, -partitions and -results defined,
// and -records and -value-size when their defaults are positive.
func (o *input) flagSet(scenario string, records, partitions, valueSize int) *flag.FlagSet {
	o.scenario = scenario
	fs := flag.NewFlagSet(scenario, flag.ExitOnError)
	fs.StringVar(&o.brokers, "brokers", os.Getenv(stack.EnvKafkaBrokers), "bootstrap servers of a running Kafka (default $KAFKA_BROKERS); empty: start a single-node Kafka from the Maven Central jars")
	fs.StringVar(&o.results, "results", "", "after a successful run, write the summary as this scenario's Markdown section of this file (other sections kept)")
	fs.IntVar(&o.partitions, "partitions", partitions, "partitions of the input and output topics")
	if records > 0 {
		fs.IntVar(&o.records, "records", records, "records preloaded into the input topic and consumed by every trial")
	}
	if valueSize > 0 {
		fs.IntVar(&o.valueSize, "value-size", valueSize, "value size in bytes of the input records")
	}
	return fs
}

// trialFlags defines -trials, -trial-timeout and, when batch > 0, -batch.
func (o *input) trialFlags(fs *flag.FlagSet, trials, batch int, timeout time.Duration) {
	fs.IntVar(&o.trials, "trials", trials, "rounds: each runs every contestant (throughput: of the main comparison; eos: mode; state: checkpoint on and off) once, in turn")
	fs.DurationVar(&o.trialTimeout, "trial-timeout", timeout, "a trial that has not committed everything by then fails the run")
	if batch > 0 {
		fs.IntVar(&o.batch, "batch", batch, "batch size (processor.Config.BatchSize; throughput: the baselines' too)")
	}
}

// rounds runs trial for each of names in turn, n times, and returns the results by name.
func rounds[R any](n int, names []string, trial func(round int, name string) (R, error)) (map[string][]R, error) {
	out := map[string][]R{}
	for round := range n {
		for _, name := range names {
			r, err := trial(round, name)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", round+1, name, err)
			}
			out[name] = append(out[name], r)
		}
	}
	return out, nil
}

// setUp starts a broker unless o.brokers names one (o.brokers is then set to it) and
// creates topics of o.partitions partitions (replication -1: the broker's default). It
// returns the admin, the broker's description, and done, which deletes the topics and
// stops the broker it started.
func (o *input) setUp(ctx context.Context, version string, replication int, topics ...string) (adm *admin, note string, done func(), err error) {
	var stop func()
	if o.brokers, note, stop, err = startBroker(ctx, o.brokers, version); err != nil {
		return nil, "", nil, err
	}
	if adm, err = newAdmin(o.brokers, replication); err == nil {
		for _, t := range topics {
			if err = adm.createTopic(ctx, t, o.partitions); err != nil {
				break
			}
		}
		if err != nil {
			adm.close()
		}
	}
	if err != nil {
		stop()
		return nil, "", nil, err
	}
	return adm, note, func() { adm.close(); stop() }, nil
}

// preloadInput preloads topic with o.records records for the throughput, eos and mem
// scenarios: key(i) and inputValue, round-robin over the partitions, with a producer of
// conf.
func (o *input) preloadInput(ctx context.Context, topic string, conf kafka.ConfigMap) (time.Duration, []int64, error) {
	value := inputValue(o.valueSize)
	return preload(ctx, o.brokers, topic, o.partitions, o.records, conf,
		func(i int) (int32, []byte, []byte) { return int32(i % o.partitions), key(i), value })
}

// startBroker returns brokers when it is set; otherwise it starts a single-node Kafka of
// version (empty: the launcher's default) and returns its bootstrap servers and a stop
// function. note describes the broker for the scenario's header.
func startBroker(ctx context.Context, brokers, version string) (bootstrap, note string, stop func(), err error) {
	if brokers != "" {
		return brokers, "external: " + brokers, func() {}, nil
	}
	fmt.Println("starting a single-node Kafka (stack.StartKafka)...")
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	k, err := stack.StartKafka(sctx, stack.KafkaOptions{Version: version})
	cancel()
	if err != nil {
		return "", "", nil, err
	}
	pid := k.PID(1)
	if version == "" {
		version = cmp.Or(os.Getenv("SAMSA_KAFKA_VERSION"), stack.DefaultKafkaVersion)
	}
	note = fmt.Sprintf("Apache Kafka %s, 1 node, started by stack.StartKafka in %s (pid %d; replication 1)",
		version, time.Since(start).Round(time.Millisecond), pid)
	return k.Bootstrap(), note, func() {
		if err := k.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: stop kafka:", err)
		}
		fmt.Printf("stopped the Kafka node started for this run (pid %d)\n", pid)
	}, nil
}

// admin creates a run's topics and deletes those still there on close.
type admin struct {
	ac          *kafka.AdminClient
	replication int // -1: the broker's default
	created     []string
}

func newAdmin(brokers string, replication int) (*admin, error) {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	if err != nil {
		return nil, fmt.Errorf("admin client for %s: %w", brokers, err)
	}
	return &admin{ac: ac, replication: replication}, nil
}

// createTopic creates name and waits until every partition has a leader.
func (a *admin) createTopic(ctx context.Context, name string, partitions int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	created, err := harness.CreateTopicWith(ctx, a.ac, kafka.TopicSpecification{Topic: name, NumPartitions: partitions, ReplicationFactor: a.replication})
	if created {
		a.created = append(a.created, name)
	}
	return err
}

// deleteTopics deletes names now (bounded), or every topic created so far when names is
// empty.
func (a *admin) deleteTopics(names ...string) {
	if len(names) == 0 {
		names, a.created = a.created, nil
	}
	a.created = slices.DeleteFunc(a.created, func(t string) bool { return slices.Contains(names, t) })
	if len(names) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.ac.DeleteTopics(ctx, names); err != nil {
		fmt.Fprintf(os.Stderr, "bench: delete topics %v: %v\n", names, err)
	}
}

func (a *admin) close() {
	a.deleteTopics()
	a.ac.Close()
}

// key is 12 bytes.
func key(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }

// inputValue is the value of every preloaded record of the throughput, eos and mem
// scenarios.
func inputValue(size int) []byte {
	v := make([]byte, size)
	for i := range v {
		v[i] = byte('a' + i%26)
	}
	return v
}

// bulkProducer is the preload producer of the throughput and mem scenarios: tuned for
// bulk loading, uncompressed, acks=1.
func bulkProducer() kafka.ConfigMap {
	return kafka.ConfigMap{
		"linger.ms": 50, "batch.size": 1 << 20, "batch.num.messages": 100000,
		"queue.buffering.max.messages": 1000000, "queue.buffering.max.kbytes": 1 << 20,
		"acks": 1, "enable.idempotence": false, "compression.type": "none", "go.delivery.report.fields": "none",
	}
}

// preload writes n records to topic with a producer of conf, record i being rec(i)
// (partition, key, value), waits for every delivery report, and returns how long it
// took and the topic's end offset per partition, which must add up to n.
func preload(ctx context.Context, brokers, topic string, partitions, n int, conf kafka.ConfigMap,
	rec func(i int) (int32, []byte, []byte)) (time.Duration, []int64, error) {
	conf["bootstrap.servers"], conf["log_level"] = brokers, 3
	p, err := kafka.NewProducer(&conf)
	if err != nil {
		return 0, nil, err
	}
	defer p.Close()
	var failed int
	var firstErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		seen := 0
		for ev := range p.Events() {
			if m, ok := ev.(*kafka.Message); ok {
				if m.TopicPartition.Error != nil {
					if failed++; firstErr == nil {
						firstErr = m.TopicPartition.Error
					}
				}
				if seen++; seen == n {
					return
				}
			}
		}
	}()
	start := time.Now()
	for i := range n {
		part, k, v := rec(i)
		m := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: part}, Key: k, Value: v}
		for {
			err := p.Produce(m, nil)
			if err == nil {
				break
			}
			var kerr kafka.Error
			if !errors.As(err, &kerr) || kerr.Code() != kafka.ErrQueueFull {
				return 0, nil, fmt.Errorf("preload: %w", err)
			}
			time.Sleep(time.Millisecond)
		}
		if i%10000 == 0 && ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-time.After(5 * time.Minute):
		return 0, nil, errors.New("preload: delivery reports timed out")
	}
	took := time.Since(start)
	if failed > 0 {
		return 0, nil, fmt.Errorf("preload: %d records failed: %w", failed, firstErr)
	}
	ends, total, err := highWatermarks(p, topic, partitions)
	if err == nil && total != int64(n) {
		err = fmt.Errorf("preload: %s holds %d records, want %d", topic, total, n)
	}
	return took, ends, err
}

// highWatermarks returns the high watermark of each partition of topic and their sum.
func highWatermarks(c interface {
	QueryWatermarkOffsets(string, int32, int) (int64, int64, error)
}, topic string, partitions int) ([]int64, int64, error) {
	highs := make([]int64, partitions)
	var total int64
	for p := range partitions {
		_, high, err := c.QueryWatermarkOffsets(topic, int32(p), 10000)
		if err != nil {
			return nil, 0, fmt.Errorf("watermarks of %s/%d: %w", topic, p, err)
		}
		highs[p], total = high, total+high
	}
	return highs, total, nil
}

// offsetProbe reads a group's committed offsets on one topic through a consumer of the
// group that never subscribes, so it does not join. (The admin client's
// ListConsumerGroupOffsets can crash the process when the coordinator answers
// NOT_COORDINATOR, as it does for a new group on a fresh broker: librdkafka #5040.)
type offsetProbe struct {
	c     *kafka.Consumer
	topic string
	ends  []int64
}

func newOffsetProbe(brokers, group, topic string, ends []int64) (*offsetProbe, error) {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": false, "log_level": 3})
	if err != nil {
		return nil, err
	}
	return &offsetProbe{c: c, topic: topic, ends: ends}, nil
}

// committed returns the sum of the committed offsets and whether every partition's
// reached its end offset; it waits at most 5 s for the answer.
func (p *offsetProbe) committed() (int64, bool) {
	tps := make([]kafka.TopicPartition, len(p.ends))
	for i := range tps {
		tps[i] = kafka.TopicPartition{Topic: &p.topic, Partition: int32(i)}
	}
	res, err := p.c.Committed(tps, 5000)
	if err != nil {
		return 0, false
	}
	var sum int64
	all := len(res) == len(p.ends)
	for _, tp := range res {
		if tp.Error != nil || tp.Offset < 0 {
			all = false
			continue
		}
		sum += int64(tp.Offset)
		all = all && int64(tp.Offset) >= p.ends[tp.Partition]
	}
	return sum, all
}

// await polls every poll until the committed offsets reach the end offsets. It fails
// when exited is closed first (the contestant stopped), at deadline, or when ctx ends.
func (p *offsetProbe) await(ctx context.Context, poll time.Duration, deadline time.Time, exited <-chan struct{}) error {
	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	for {
		if _, all := p.committed(); all {
			return nil
		}
		select {
		case <-time.After(poll):
		case <-exited:
			return errors.New("exited before committing everything")
		case <-timeout.C:
			sum, _ := p.committed()
			return fmt.Errorf("committed offsets did not reach the end in time (%d records committed)", sum)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *offsetProbe) close() { p.c.Close() }

// newReader returns a consumer outside any group assigned every partition of topic from
// the beginning.
func newReader(brokers, group, topic string, partitions int) (*kafka.Consumer, error) {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": group,
		"enable.auto.commit": false, "fetch.wait.max.ms": 5, "fetch.min.bytes": 1, "log_level": 3})
	if err != nil {
		return nil, err
	}
	tps := make([]kafka.TopicPartition, partitions)
	for p := range tps {
		tps[p] = kafka.TopicPartition{Topic: &topic, Partition: int32(p), Offset: kafka.OffsetBeginning}
	}
	if err := c.Assign(tps); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// procRun is a processor's Run (or any run function) on a goroutine of its own.
type procRun struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned
	err    error         // run's result, once done is closed
}

func startRun(ctx context.Context, run func(context.Context) error) *procRun {
	ctx, cancel := context.WithCancel(ctx)
	r := &procRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = run(ctx)
		close(r.done)
	}()
	return r
}

// stop cancels the run and returns its error; it waits at most a minute.
func (r *procRun) stop() error {
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(time.Minute):
		return errors.New("Run did not return within 1m of cancel")
	}
}

// cpuTime is this process's user+sys time (its client threads included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatus returns the values in bytes of kB fields of a /proc status file, 0 for a
// field it cannot read.
func procStatus(path string, fields ...string) []int64 {
	out := make([]int64, len(fields))
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 {
			if i := slices.Index(fields, f[0]); i >= 0 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				out[i] = n << 10
			}
		}
	}
	return out
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

// commandLine is how this run was started, as a go run command line.
func commandLine() string {
	out := []string{"go run ./integration/bench"}
	for _, a := range os.Args[1:] {
		if a == "" || strings.ContainsAny(a, " ,;") {
			a = "'" + a + "'"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func median(xs []float64) float64 {
	med, _, _ := spread(xs)
	return med
}

// spread returns the median, minimum and maximum of xs; zeros when xs is empty.
func spread(xs []float64) (med, lo, hi float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	s := slices.Sorted(slices.Values(xs))
	med = s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + med) / 2
	}
	return med, s[0], s[len(s)-1]
}

// medianRange formats xs as "median (min-max)" with no decimals.
func medianRange(xs []float64) string {
	med, lo, hi := spread(xs)
	return fmt.Sprintf("%.0f (%.0f-%.0f)", med, lo, hi)
}

func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) }

// discardExporter drops spans after the SDK built and batched them, so tracing costs
// what it would with an exporter.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }
