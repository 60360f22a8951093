package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/state"
)

type stateOptions struct {
	input
	redisAddr    string
	keys         int
	trials       int
	batch        int
	redisArgs    string
	trialTimeout time.Duration
}

// stateMain runs the state scenario and returns the exit code.
func stateMain(args []string) int {
	var o stateOptions
	fs := o.flagSet("state", 200_000, 8, 0)
	fs.StringVar(&o.redisAddr, "redis", os.Getenv(stack.EnvRedisAddr), "host:port of a running Redis (default $REDIS_ADDR); empty: start a redis-server")
	fs.IntVar(&o.keys, "keys", 10_000, "distinct keys")
	fs.IntVar(&o.trials, "trials", 3, "trials per mode (alternating on, off)")
	fs.IntVar(&o.batch, "batch", 1000, "processor.Config.BatchSize")
	fs.StringVar(&o.redisArgs, "redis-args", "", "extra redis-server arguments when this harness starts Redis, space-separated (e.g. \"--appendonly yes --appendfsync everysec\"); default: no persistence")
	fs.DurationVar(&o.trialTimeout, "trial-timeout", 3*time.Minute, "a trial that has not committed everything by then fails the run")
	fs.Parse(args)
	if o.records < o.partitions || o.partitions < 1 || o.trials < 1 || o.batch < 1 || o.keys < o.partitions {
		return usageError("state", errors.New("need -records >= -partitions >= 1, -keys >= -partitions, -trials >= 1, -batch >= 1"))
	}
	fmt.Println("command:", commandLine())
	return runScenario(func(ctx context.Context) error { return stateRun(ctx, o) })
}

func stateRun(ctx context.Context, o stateOptions) error {
	start := time.Now()
	in := stack.UniqueName("statebench-in")
	_, _, done, err := o.setUp(ctx, "", 1, in)
	if err != nil {
		return err
	}
	defer done()
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
	enc := codec.Int64()
	var wantSum int64
	took, ends, err := preload(ctx, o.brokers, in, o.partitions, o.records,
		kafka.ConfigMap{"linger.ms": 50, "acks": "all", "enable.idempotence": true, "queue.buffering.max.messages": 1_000_000},
		func(i int) (int32, []byte, []byte) {
			v, _ := enc.Encode(stateValue(i))
			wantSum += stateValue(i)
			k := i % o.keys
			return int32(k % o.partitions), stateKey(k), v
		})
	if err != nil {
		return err
	}
	fmt.Printf("preloaded %d records over %d keys into %s (%d partitions) in %s\n", o.records, o.keys, in, o.partitions, took.Round(time.Millisecond))

	client := redis.NewClient(&redis.Options{Addr: o.redisAddr})
	defer client.Close()
	var results [2][]stateResult // checkpoint on, off
	for i := range 2 * o.trials {
		mode := []string{"on", "off"}[i%2]
		r, err := stateTrial(ctx, o, client, in, ends, mode, wantSum)
		if err != nil {
			return fmt.Errorf("trial %d (%s): %w", i+1, mode, err)
		}
		results[i%2] = append(results[i%2], r)
		fmt.Printf("trial %d checkpoint=%-3s join=%-7s handled=%8.0f records/s  committed=%8.0f records/s  (batches=%d, %s to handle, %s to commit; CPU/record: process %.1fµs, redis %.1fµs; load %s)\n",
			i+1, mode, r.join.Round(time.Millisecond), r.handledRPS(o.records), r.committedRPS(o.records), r.batches,
			r.handled.Round(time.Millisecond), r.committed.Round(time.Millisecond),
			perRecord(r.procCPU, o.records), perRecord(r.redisCPU, o.records), loadAvg())
	}
	// Each on trial against the off trial right after it: drift of the machine's load
	// between distant trials cancels out.
	var pairs []float64
	for i := range o.trials {
		pairs = append(pairs, results[0][i].handledRPS(o.records)/results[1][i].handledRPS(o.records))
	}
	pm, plo, phi := spread(pairs)
	fig := func(rs []stateResult, f func(stateResult) float64) float64 {
		var xs []float64
		for _, r := range rs {
			xs = append(xs, f(r))
		}
		return median(xs)
	}
	handled := func(r stateResult) float64 { return r.handledRPS(o.records) }
	committed := func(r stateResult) float64 { return r.committedRPS(o.records) }
	proc := func(r stateResult) float64 { return perRecord(r.procCPU, o.records) }
	rcpu := func(r stateResult) float64 { return perRecord(r.redisCPU, o.records) }
	on, off := results[0], results[1]
	fmt.Printf("\nmedian over %d trials each (records=%d keys=%d partitions=%d batch=%d):\n", o.trials, o.records, o.keys, o.partitions, o.batch)
	fmt.Printf("  checkpoint on  (WithCheckpoint + Table.Apply):    handled %8.0f records/s, committed %8.0f records/s\n", fig(on, handled), fig(on, committed))
	fmt.Printf("  checkpoint off (Partition(p).PutMany, no checkpoint): handled %8.0f records/s, committed %8.0f records/s\n", fig(off, handled), fig(off, committed))
	fmt.Printf("  ratio on/off: handled %.3f, committed %.3f; per adjacent pair (handled) min %.3f median %.3f max %.3f\n",
		fig(on, handled)/fig(off, handled), fig(on, committed)/fig(off, committed), plo, pm, phi)
	fmt.Printf("  CPU per record (median): process on %.1fµs off %.1fµs; redis-server on %.1fµs off %.1fµs\n",
		fig(on, proc), fig(off, proc), fig(on, rcpu), fig(off, rcpu))
	fmt.Printf("total %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

type stateResult struct {
	join      time.Duration // Run start to the first batch
	handled   time.Duration // first batch to the last record handled
	committed time.Duration // first batch to committed == end
	batches   int64
	procCPU   time.Duration // this process's user+sys time over the trial (librdkafka included)
	redisCPU  time.Duration // redis-server's used_cpu_user+used_cpu_sys over the trial
}

func (r stateResult) handledRPS(n int) float64   { return float64(n) / r.handled.Seconds() }
func (r stateResult) committedRPS(n int) float64 { return float64(n) / r.committed.Seconds() }

func perRecord(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

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

// stateValue is the value of input record i; stateKey is key k of -keys.
func stateValue(i int) int64 { return int64(i%1000) - 300 }

func stateKey(k int) []byte { return fmt.Appendf(nil, "b%05d", k) }

// trial runs one processor over the whole input into a fresh namespace.
func stateTrial(ctx context.Context, o stateOptions, client *redis.Client, in string, ends []int64, mode string, wantSum int64) (stateResult, error) {
	ns := strings.ReplaceAll(stack.UniqueName("statebench"), "-", ".")
	group := stack.UniqueName("statebench-" + mode)
	defer deleteNamespace(client, ns)
	tbl, err := state.NewTable(client, ns, codec.String(), codec.Int64())
	if err != nil {
		return stateResult{}, err
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
		return stateResult{}, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	cpu0, rcpu0 := cpuTime(), redisCPU(ctx, client)
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
		return stateResult{}, fmt.Errorf("Run returned before the end: %v", err)
	case <-deadline:
		stopRun()
		return stateResult{}, fmt.Errorf("handled %d of %d records within %s", handled.Load(), o.records, o.trialTimeout)
	}
	handledAt := time.Now()
	firstAt := time.Unix(0, first.Load())
	probe, err := newOffsetProbe(o.brokers, group, in, ends)
	if err != nil {
		stopRun()
		return stateResult{}, err
	}
	defer probe.close()
	for {
		if _, all := probe.committed(5 * time.Second); all {
			break
		}
		select {
		case <-deadline:
			stopRun()
			return stateResult{}, fmt.Errorf("committed offsets did not reach the end within %s", o.trialTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
	committedAt := time.Now()
	procCPU, rCPU := cpuTime()-cpu0, redisCPU(ctx, client)-rcpu0
	if err := stopRun(); err != nil {
		return stateResult{}, fmt.Errorf("Run: %w", err)
	}
	if err := checkSums(ctx, client, ns, o, wantSum); err != nil {
		return stateResult{}, err
	}
	return stateResult{join: firstAt.Sub(started), handled: handledAt.Sub(firstAt), committed: committedAt.Sub(firstAt), batches: batches.Load(),
		procCPU: procCPU, redisCPU: rCPU}, nil
}

// checkSums checks that Σ sums and Σ counts over the namespace's keys equal the input's.
func checkSums(ctx context.Context, client *redis.Client, ns string, o stateOptions, wantSum int64) error {
	tbl, err := state.NewTable(client, ns, codec.String(), codec.Int64())
	if err != nil {
		return err
	}
	var sum, cnt int64
	for p := range o.partitions {
		var tkeys []string
		for k := p; k < o.keys; k += o.partitions {
			key := string(stateKey(k))
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
