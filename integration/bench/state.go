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
	redisAddr, redisArgs string
	keys                 int
}

// stateMain runs the state scenario and returns the exit code.
func stateMain(args []string) int {
	var o stateOptions
	fs := o.flagSet("state", 200_000, 8, 0)
	fs.StringVar(&o.redisAddr, "redis", os.Getenv(stack.EnvRedisAddr), "host:port of a running Redis (default $REDIS_ADDR); empty: start a redis-server")
	fs.IntVar(&o.keys, "keys", 10_000, "distinct keys")
	o.trialFlags(fs, 3, 1000, 3*time.Minute)
	fs.StringVar(&o.redisArgs, "redis-args", "", "extra redis-server arguments when this harness starts Redis, space-separated (e.g. \"--appendonly yes --appendfsync everysec\"); default: no persistence")
	fs.Parse(args)
	if o.records < o.partitions || o.partitions < 1 || o.trials < 1 || o.batch < 1 || o.keys < o.partitions {
		return o.usageError(errors.New("need -records >= -partitions >= 1, -keys >= -partitions, -trials >= 1, -batch >= 1"))
	}
	return o.run(func(ctx context.Context) (*summary, error) { return stateRun(ctx, o) })
}

func stateRun(ctx context.Context, o stateOptions) (*summary, error) {
	in := stack.UniqueName("statebench-in")
	_, note, done, err := o.setUp(ctx, "", 1, in)
	if err != nil {
		return nil, err
	}
	defer done()
	redisNote := "external: " + o.redisAddr
	if o.redisAddr == "" {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		r, err := stack.StartRedis(sctx, stack.RedisOptions{Args: strings.Fields(o.redisArgs)})
		cancel()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		o.redisAddr = r.Addr()
		redisNote = fmt.Sprintf("redis-server started on %s (args: %q)", o.redisAddr, o.redisArgs)
		fmt.Println(redisNote)
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
		return nil, err
	}
	fmt.Printf("preloaded %d records over %d keys into %s (%d partitions) in %s\n", o.records, o.keys, in, o.partitions, took.Round(time.Millisecond))

	client := redis.NewClient(&redis.Options{Addr: o.redisAddr})
	defer client.Close()
	byMode, err := rounds(o.trials, []string{"on", "off"}, func(i int, mode string) (stateResult, error) {
		r, err := stateTrial(ctx, o, client, in, ends, mode, wantSum)
		if err != nil {
			return r, err
		}
		fmt.Printf("round %d checkpoint=%-3s join=%-7s handled=%8.0f records/s  committed=%8.0f records/s  (batches=%d, %s to handle, %s to commit; CPU/record: process %.1fµs, redis %.1fµs; load %s)\n",
			i+1, mode, r.join.Round(time.Millisecond), r.handledRPS(o.records), r.committedRPS(o.records), r.batches,
			r.handled.Round(time.Millisecond), r.committed.Round(time.Millisecond),
			perRecord(r.procCPU, o.records), perRecord(r.redisCPU, o.records), loadAvg())
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	results := [2][]stateResult{byMode["on"], byMode["off"]}
	// Each on trial against the off trial right after it: drift of the machine's load
	// between distant trials cancels out.
	var pairs []float64
	for i := range o.trials {
		pairs = append(pairs, results[0][i].handledRPS(o.records)/results[1][i].handledRPS(o.records))
	}
	pm, plo, phi := spread(pairs)
	fig := func(mode int, f func(stateResult) float64) float64 {
		var xs []float64
		for _, r := range results[mode] {
			xs = append(xs, f(r))
		}
		return median(xs)
	}
	figs := []func(stateResult) float64{
		func(r stateResult) float64 { return r.handledRPS(o.records) },
		func(r stateResult) float64 { return r.committedRPS(o.records) },
		func(r stateResult) float64 { return perRecord(r.procCPU, o.records) },
		func(r stateResult) float64 { return perRecord(r.redisCPU, o.records) },
	}
	sum := &summary{about: []string{"broker: " + note, "redis: " + redisNote, fmt.Sprintf(
		"config: %d records over %d keys, %d partitions, batch %d; %d trials each, alternating on, off",
		o.records, o.keys, o.partitions, o.batch, o.trials)}}
	t := sum.table("medians per mode:", "checkpoint", "handled records/s", "committed records/s",
		"process CPU µs/record", "redis-server CPU µs/record")
	for mode, name := range []string{"on (WithCheckpoint + Table.Apply)", "off (Partition(p).PutMany, no checkpoint)"} {
		t.add(name, fmt.Sprintf("%.0f", fig(mode, figs[0])), fmt.Sprintf("%.0f", fig(mode, figs[1])),
			fmt.Sprintf("%.1f", fig(mode, figs[2])), fmt.Sprintf("%.1f", fig(mode, figs[3])))
	}
	t.note("ratio on/off: handled %.3f, committed %.3f; per adjacent pair (handled) min %.3f median %.3f max %.3f",
		fig(0, figs[0])/fig(1, figs[0]), fig(0, figs[1])/fig(1, figs[1]), plo, pm, phi)
	return sum, nil
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
	cpu0, rcpu0 := cpuTime(), redisCPU(ctx, client)
	started := time.Now()
	deadline := started.Add(o.trialTimeout)
	run := startRun(ctx, p.Run)
	select {
	case <-allDone:
	case <-run.done:
		return stateResult{}, fmt.Errorf("Run returned before the end: %v", run.err)
	case <-time.After(o.trialTimeout):
		run.stop()
		return stateResult{}, fmt.Errorf("handled %d of %d records within %s", handled.Load(), o.records, o.trialTimeout)
	}
	handledAt := time.Now()
	firstAt := time.Unix(0, first.Load())
	probe, err := newOffsetProbe(o.brokers, group, in, ends)
	if err != nil {
		run.stop()
		return stateResult{}, err
	}
	defer probe.close()
	if err := probe.await(ctx, 50*time.Millisecond, deadline, run.done); err != nil {
		return stateResult{}, errors.Join(fmt.Errorf("-trial-timeout %s: %w", o.trialTimeout, err), run.stop())
	}
	committedAt := time.Now()
	procCPU, rCPU := cpuTime()-cpu0, redisCPU(ctx, client)-rcpu0
	if err := run.stop(); err != nil {
		return stateResult{}, fmt.Errorf("Run: %w", err)
	}
	if err := checkSums(ctx, tbl, o, wantSum); err != nil {
		return stateResult{}, err
	}
	return stateResult{join: firstAt.Sub(started), handled: handledAt.Sub(firstAt), committed: committedAt.Sub(firstAt), batches: batches.Load(),
		procCPU: procCPU, redisCPU: rCPU}, nil
}

// checkSums checks that Σ sums and Σ counts over the namespace's keys equal the input's.
func checkSums(ctx context.Context, tbl *state.Table[string, int64], o stateOptions, wantSum int64) error {
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
