// Command statebench measures what exactly-once effects on a Redis table cost a processor:
// records/s with the checkpoint on (processor.WithCheckpoint(table), each batch written
// with table.Apply and its offsets) and off (the same handler writing the same sums with
// the table partition's plain PutMany, no checkpoint), in alternating trials of one run,
// and prints the ratio.
//
// Usage (no Makefile needed; starts a single-node Kafka unless $KAFKA_BROKERS is set, and a
// redis-server unless $REDIS_ADDR is set):
//
//	go run ./integration/statebench -records 200000 -keys 10000 -trials 3
//
// # What is measured
//
// The input topic (-partitions partitions, replication 1) is preloaded once with -records
// records: keys "b%05d" over -keys distinct keys (partition = key index mod partitions),
// 8-byte int64 values. Every trial consumes the whole topic from the beginning with a fresh
// consumer group into a fresh table namespace. The handler (the same code in both modes)
// reads the current sums of the batch's keys with one MGET (table.Partition(p).GetMany),
// adds the batch, and writes the new sums:
//
//   - on:  table.Apply(ctx, p, puts, nil, b.NextOffsets()) — one Lua script writing the
//     sums and the partition's applied offset atomically — and the processor runs with
//     processor.WithCheckpoint(table) (one HGET per partition on assignment).
//   - off: table.Partition(p).PutMany(ctx, puts) — one MSET — and no checkpoint.
//
// records/s is -records over the time from the first batch handed to the handler until
// the handler has seen every record ("handled"), and until the group's committed offsets
// equal the end offsets, polled every 50 ms ("committed"). After each trial the sums are
// checked (Σ sums and Σ counts over every key equal the input's) and the namespace is
// deleted. Trials alternate on, off, on, off, ...; the figures are medians per mode and
// ratio = on / off, also taken per adjacent (on, off) pair. CPU per record is this
// process's user+sys time (librdkafka's threads included) and redis-server's (INFO cpu)
// over the trial, divided by -records. Redis runs on the same machine as Kafka and the processor: on a small
// machine all three compete for the CPUs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/state"
)

type options struct {
	brokers      string
	redisAddr    string
	records      int
	keys         int
	partitions   int
	trials       int
	batch        int
	redisArgs    string
	trialTimeout time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.brokers, "brokers", os.Getenv(stack.EnvKafkaBrokers), "bootstrap servers of a running Kafka (default $KAFKA_BROKERS); empty: start a single-node Kafka from the Maven Central jars")
	flag.StringVar(&o.redisAddr, "redis", os.Getenv(stack.EnvRedisAddr), "host:port of a running Redis (default $REDIS_ADDR); empty: start a redis-server")
	flag.IntVar(&o.records, "records", 200_000, "records preloaded into the input topic and consumed by every trial")
	flag.IntVar(&o.keys, "keys", 10_000, "distinct keys")
	flag.IntVar(&o.partitions, "partitions", 8, "partitions of the input topic")
	flag.IntVar(&o.trials, "trials", 3, "trials per mode (alternating on, off)")
	flag.IntVar(&o.batch, "batch", 1000, "processor.Config.BatchSize")
	flag.StringVar(&o.redisArgs, "redis-args", "", "extra redis-server arguments when this harness starts Redis, space-separated (e.g. \"--appendonly yes --appendfsync everysec\"); default: no persistence")
	flag.DurationVar(&o.trialTimeout, "trial-timeout", 3*time.Minute, "a trial that has not committed everything by then fails the run")
	flag.Parse()
	if o.records < o.partitions || o.partitions < 1 || o.trials < 1 || o.batch < 1 || o.keys < o.partitions {
		fmt.Fprintln(os.Stderr, "statebench: need -records >= -partitions >= 1, -keys >= -partitions, -trials >= 1, -batch >= 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "statebench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	start := time.Now()
	fmt.Printf("command: %s\n", strings.Join(os.Args, " "))
	if o.brokers == "" {
		fmt.Println("starting a single-node Kafka (stack.StartKafka)...")
		sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		k, err := stack.StartKafka(sctx, stack.KafkaOptions{})
		cancel()
		if err != nil {
			return err
		}
		defer k.Close()
		o.brokers = k.Bootstrap()
	}
	if o.redisAddr == "" {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		r, err := stack.StartRedis(sctx, stack.RedisOptions{Args: strings.Fields(o.redisArgs)})
		cancel()
		if err != nil {
			return err
		}
		defer r.Close()
		o.redisAddr = r.Addr()
		fmt.Printf("started redis-server on %s (args: %q)\n", o.redisAddr, o.redisArgs)
	}
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": o.brokers, "log_level": 3})
	if err != nil {
		return err
	}
	defer ac.Close()
	in := stack.UniqueName("statebench-in")
	if err := createTopic(ctx, ac, in, o.partitions); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ac.DeleteTopics(dctx, []string{in})
	}()
	took, ends, wantSum, err := preload(ctx, o, in)
	if err != nil {
		return err
	}
	fmt.Printf("preloaded %d records over %d keys into %s (%d partitions) in %s\n", o.records, o.keys, in, o.partitions, took.Round(time.Millisecond))

	client := redis.NewClient(&redis.Options{Addr: o.redisAddr})
	defer client.Close()
	results := map[string][]result{}
	for i := range 2 * o.trials {
		mode := []string{"on", "off"}[i%2]
		r, err := trial(ctx, o, client, in, ends, mode, wantSum)
		if err != nil {
			return fmt.Errorf("trial %d (%s): %w", i+1, mode, err)
		}
		results[mode] = append(results[mode], r)
		fmt.Printf("trial %d checkpoint=%-3s join=%-7s handled=%8.0f records/s  committed=%8.0f records/s  (batches=%d, %s to handle, %s to commit; CPU/record: process %.1fµs, redis %.1fµs; load %s)\n",
			i+1, mode, r.join.Round(time.Millisecond), r.handledRPS(o.records), r.committedRPS(o.records), r.batches,
			r.handled.Round(time.Millisecond), r.committed.Round(time.Millisecond),
			perRecord(r.procCPU, o.records), perRecord(r.redisCPU, o.records), loadAvg())
	}
	// Each on trial against the off trial right after it: drift of the machine's load
	// between distant trials cancels out.
	var pairs []float64
	for i := range o.trials {
		pairs = append(pairs, results["on"][i].handledRPS(o.records)/results["off"][i].handledRPS(o.records))
	}
	slices.Sort(pairs)
	on, off := median(results["on"], o.records), median(results["off"], o.records)
	fmt.Printf("\nmedian over %d trials each (records=%d keys=%d partitions=%d batch=%d):\n", o.trials, o.records, o.keys, o.partitions, o.batch)
	fmt.Printf("  checkpoint on  (WithCheckpoint + Table.Apply):    handled %8.0f records/s, committed %8.0f records/s\n", on[0], on[1])
	fmt.Printf("  checkpoint off (Partition(p).PutMany, no checkpoint): handled %8.0f records/s, committed %8.0f records/s\n", off[0], off[1])
	fmt.Printf("  ratio on/off: handled %.3f, committed %.3f; per adjacent pair (handled) min %.3f median %.3f max %.3f\n",
		on[0]/off[0], on[1]/off[1], pairs[0], pairs[len(pairs)/2], pairs[len(pairs)-1])
	fmt.Printf("  CPU per record (median): process on %.1fµs off %.1fµs; redis-server on %.1fµs off %.1fµs\n",
		medianCPU(results["on"], o.records, false), medianCPU(results["off"], o.records, false),
		medianCPU(results["on"], o.records, true), medianCPU(results["off"], o.records, true))
	fmt.Printf("total %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

type result struct {
	join      time.Duration // Run start to the first batch
	handled   time.Duration // first batch to the last record handled
	committed time.Duration // first batch to committed == end
	batches   int64
	procCPU   time.Duration // this process's user+sys time over the trial (librdkafka included)
	redisCPU  time.Duration // redis-server's used_cpu_user+used_cpu_sys over the trial
}

func (r result) handledRPS(n int) float64   { return float64(n) / r.handled.Seconds() }
func (r result) committedRPS(n int) float64 { return float64(n) / r.committed.Seconds() }

// median returns the median handled and committed records/s.
func median(rs []result, n int) [2]float64 {
	var h, c []float64
	for _, r := range rs {
		h = append(h, r.handledRPS(n))
		c = append(c, r.committedRPS(n))
	}
	slices.Sort(h)
	slices.Sort(c)
	return [2]float64{h[len(h)/2], c[len(c)/2]}
}

func perRecord(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

func medianCPU(rs []result, n int, redisSide bool) float64 {
	var xs []float64
	for _, r := range rs {
		d := r.procCPU
		if redisSide {
			d = r.redisCPU
		}
		xs = append(xs, perRecord(d, n))
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisCPU returns redis-server's used_cpu_user + used_cpu_sys (INFO cpu).
func redisCPU(ctx context.Context, c *redis.Client) time.Duration {
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			x, _ := strconv.ParseFloat(v, 64)
			total += x
		}
	}
	return time.Duration(total * float64(time.Second))
}

func value(i int) int64 { return int64(i%1000) - 300 }

func createTopic(ctx context.Context, ac *kafka.AdminClient, name string, partitions int) error {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := ac.CreateTopics(cctx, []kafka.TopicSpecification{{Topic: name, NumPartitions: partitions, ReplicationFactor: 1}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	if res[0].Error.Code() != kafka.ErrNoError {
		return fmt.Errorf("create topic %s: %w", name, res[0].Error)
	}
	for {
		md, err := ac.GetMetadata(&name, false, 2000)
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

// preload writes the input and returns its end offsets and the sum of its values.
func preload(ctx context.Context, o options, topic string) (time.Duration, map[int32]int64, int64, error) {
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers": o.brokers, "linger.ms": 50, "acks": "all", "enable.idempotence": true,
		"queue.buffering.max.messages": 1_000_000, "log_level": 3,
	})
	if err != nil {
		return 0, nil, 0, err
	}
	defer p.Close()
	var failed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		n := 0
		for ev := range p.Events() {
			if m, ok := ev.(*kafka.Message); ok {
				if m.TopicPartition.Error != nil {
					failed.Add(1)
				}
				if n++; n == o.records {
					return
				}
			}
		}
	}()
	start := time.Now()
	enc := codec.Int64()
	var sum int64
	for i := range o.records {
		v, _ := enc.Encode(value(i))
		sum += value(i)
		k := i % o.keys
		m := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(k % o.partitions)},
			Key: fmt.Appendf(nil, "b%05d", k), Value: v}
		for {
			err := p.Produce(m, nil)
			if err == nil {
				break
			}
			var kerr kafka.Error
			if errors.As(err, &kerr) && kerr.Code() == kafka.ErrQueueFull {
				time.Sleep(time.Millisecond)
				continue
			}
			return 0, nil, 0, err
		}
		if i%10000 == 0 && ctx.Err() != nil {
			return 0, nil, 0, ctx.Err()
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return 0, nil, 0, errors.New("preload: delivery reports timed out")
	}
	if n := failed.Load(); n > 0 {
		return 0, nil, 0, fmt.Errorf("preload: %d records failed", n)
	}
	ends := map[int32]int64{}
	var total int64
	for part := range int32(o.partitions) {
		_, high, err := p.QueryWatermarkOffsets(topic, part, 10000)
		if err != nil {
			return 0, nil, 0, err
		}
		ends[part] = high
		total += high
	}
	if total != int64(o.records) {
		return 0, nil, 0, fmt.Errorf("preload: topic holds %d records, want %d", total, o.records)
	}
	return time.Since(start), ends, sum, nil
}

// trial runs one processor over the whole input into a fresh namespace.
func trial(ctx context.Context, o options, client *redis.Client, in string, ends map[int32]int64, mode string, wantSum int64) (result, error) {
	ns := strings.ReplaceAll(stack.UniqueName("statebench"), "-", ".")
	group := stack.UniqueName("statebench-" + mode)
	defer deleteNamespace(client, ns)
	tbl, err := state.NewTable(client, ns, codec.String(), codec.Int64())
	if err != nil {
		return result{}, err
	}
	var (
		handled  atomic.Int64
		batches  atomic.Int64
		first    atomic.Int64 // unix nanos of the first batch
		allDone  = make(chan struct{})
		doneOnce atomic.Bool
	)
	checkpoint := mode == "on"
	h := processor.HandlerFunc[string, int64](func(ctx context.Context, b *processor.Batch[string, int64]) error {
		first.CompareAndSwap(0, time.Now().UnixNano())
		index := map[string]int{}
		var keys []string
		for _, r := range b.Records {
			if _, ok := index[r.Key]; !ok {
				index[r.Key] = len(keys)
				keys = append(keys, r.Key)
			}
		}
		tkeys := make([]string, 0, 2*len(keys))
		for _, k := range keys {
			tkeys = append(tkeys, "sum/"+k, "cnt/"+k)
		}
		cur, _, err := tbl.Partition(b.Partition).GetMany(ctx, tkeys)
		if err != nil {
			return err
		}
		for _, r := range b.Records {
			i := index[r.Key]
			cur[2*i] += r.Value
			cur[2*i+1]++
		}
		puts := make([]state.Entry[string, int64], len(tkeys))
		for i := range tkeys {
			puts[i] = state.Entry[string, int64]{Key: tkeys[i], Value: cur[i]}
		}
		if checkpoint {
			err = tbl.Apply(ctx, b.Partition, puts, nil, b.NextOffsets())
			if errors.Is(err, state.ErrAlreadyApplied) {
				err = nil
			}
		} else {
			err = tbl.Partition(b.Partition).PutMany(ctx, puts)
		}
		if err != nil {
			return err
		}
		batches.Add(1)
		if handled.Add(int64(len(b.Records))) >= int64(o.records) && doneOnce.CompareAndSwap(false, true) {
			close(allDone)
		}
		return nil
	})
	var opts []processor.Option
	opts = append(opts, processor.WithLogger(slog.New(slog.DiscardHandler)))
	if checkpoint {
		opts = append(opts, processor.WithCheckpoint(tbl))
	}
	p, err := processor.New(processor.Config{
		Membership:     processor.Membership{Brokers: o.brokers},
		Group:          group,
		BatchSize:      o.batch,
		CommitInterval: 100 * time.Millisecond,
	}, []processor.Input[string, int64]{{Topic: in, Key: codec.String(), Value: codec.Int64()}}, h, opts...)
	if err != nil {
		return result{}, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	cpu0, rcpu0 := processCPU(), redisCPU(ctx, client)
	started := time.Now()
	go func() { runErr <- p.Run(rctx) }()
	stopRun := func() error {
		cancel()
		select {
		case err := <-runErr:
			return err
		case <-time.After(time.Minute):
			return errors.New("Run did not return within 1m of cancel")
		}
	}
	deadline := time.After(o.trialTimeout)
	select {
	case <-allDone:
	case err := <-runErr:
		return result{}, fmt.Errorf("Run returned before the end: %v", err)
	case <-deadline:
		stopRun()
		return result{}, fmt.Errorf("handled %d of %d records within %s", handled.Load(), o.records, o.trialTimeout)
	}
	handledAt := time.Now()
	firstAt := time.Unix(0, first.Load())
	probe, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": o.brokers, "group.id": group, "enable.auto.commit": false, "log_level": 3})
	if err != nil {
		stopRun()
		return result{}, err
	}
	defer probe.Close()
	for !committedAll(probe, in, ends) {
		select {
		case <-deadline:
			stopRun()
			return result{}, fmt.Errorf("committed offsets did not reach the end within %s", o.trialTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
	committedAt := time.Now()
	procCPU, rCPU := processCPU()-cpu0, redisCPU(ctx, client)-rcpu0
	if err := stopRun(); err != nil {
		return result{}, fmt.Errorf("Run: %w", err)
	}
	if err := checkSums(ctx, client, ns, o, wantSum); err != nil {
		return result{}, err
	}
	return result{join: firstAt.Sub(started), handled: handledAt.Sub(firstAt), committed: committedAt.Sub(firstAt), batches: batches.Load(),
		procCPU: procCPU, redisCPU: rCPU}, nil
}

// committedAll reports whether the group's committed offsets equal ends. It asks through
// a consumer of the group that never joins it (rd_kafka_committed), not through
// AdminClient.ListConsumerGroupOffsets, which crashes the process with SIGSEGV when the
// broker answers NOT_COORDINATOR (librdkafka issue #5040), as a fresh broker does.
func committedAll(c *kafka.Consumer, topic string, ends map[int32]int64) bool {
	tps := make([]kafka.TopicPartition, 0, len(ends))
	for p := range ends {
		tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p})
	}
	res, err := c.Committed(tps, 5000)
	if err != nil {
		return false
	}
	for _, tp := range res {
		if tp.Error != nil || int64(tp.Offset) != ends[tp.Partition] {
			return false
		}
	}
	return true
}

// checkSums checks that Σ sums and Σ counts over the namespace's keys equal the input's.
func checkSums(ctx context.Context, client *redis.Client, ns string, o options, wantSum int64) error {
	tbl, err := state.NewTable(client, ns, codec.String(), codec.Int64())
	if err != nil {
		return err
	}
	var sum, cnt int64
	for p := range o.partitions {
		var tkeys []string
		for k := p; k < o.keys; k += o.partitions {
			key := fmt.Sprintf("b%05d", k)
			tkeys = append(tkeys, "sum/"+key, "cnt/"+key)
		}
		vals, _, err := tbl.Partition(int32(p)).GetMany(ctx, tkeys)
		if err != nil {
			return err
		}
		for i := 0; i < len(vals); i += 2 {
			sum += vals[i]
			cnt += vals[i+1]
		}
	}
	if sum != wantSum || cnt != int64(o.records) {
		return fmt.Errorf("table holds Σsum=%d Σcount=%d, want %d and %d", sum, cnt, wantSum, o.records)
	}
	return nil
}

func deleteNamespace(client *redis.Client, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	iter := client.Scan(ctx, 0, "{"+ns+":*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 500 {
			client.Del(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		client.Del(ctx, batch...)
	}
}
