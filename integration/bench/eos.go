package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
)

type eosOptions struct {
	input
	cadences []time.Duration
	timeout  time.Duration
}

// eosMain runs the eos scenario and returns the exit code.
func eosMain(args []string) int {
	var o eosOptions
	var cadences string
	fs := o.flagSet("eos", 500_000, 8, 100)
	o.trialFlags(fs, 5, 1000, 3*time.Minute)
	fs.StringVar(&cadences, "commit", "100ms,1s", "comma-separated CommitInterval values (EOS: one transaction per interval)")
	fs.DurationVar(&o.timeout, "timeout", 8*time.Minute, "bound on the whole run (broker start and preload included)")
	fs.Parse(args)
	for _, c := range splitList(cadences) {
		d, err := time.ParseDuration(c)
		if err != nil || d <= 0 {
			return o.usageError(fmt.Errorf("-commit %q: want positive durations like 100ms,1s", c))
		}
		o.cadences = append(o.cadences, d)
	}
	if o.records <= 0 || o.partitions <= 0 || o.trials <= 0 || o.valueSize < 0 || len(o.cadences) == 0 {
		return o.usageError(fmt.Errorf("-records, -partitions, -trials and -commit must be positive"))
	}
	return o.run(func(ctx context.Context) (*summary, error) {
		ctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		return eosRun(ctx, o)
	})
}

func eosRun(ctx context.Context, o eosOptions) (*summary, error) {
	in := stack.UniqueName("eosbench-in")
	adm, note, done, err := o.setUp(ctx, "", -1, in)
	if err != nil {
		return nil, err
	}
	defer done()
	producer := kafka.ConfigMap{"enable.idempotence": true, "acks": "all", "linger.ms": 20, "batch.size": 1 << 20}
	took, ends, err := o.preloadInput(ctx, in, producer)
	if err != nil {
		return nil, err
	}
	fmt.Printf("preload: %d records (%d-byte values) into %d partitions in %s\n\n",
		o.records, o.valueSize, o.partitions, took.Round(time.Millisecond))
	rates := make([]map[string][]float64, len(o.cadences)) // per cadence, by mode
	for ci, cad := range o.cadences {
		rates[ci], err = rounds(o.trials, []string{"ALO", "EOS"}, func(round int, mode string) (float64, error) {
			if ctx.Err() != nil {
				return 0, fmt.Errorf("run bound (-timeout %s) reached", o.timeout)
			}
			r, err := eosTrial(ctx, o, adm, in, ends, cad, mode == "EOS")
			if err != nil {
				return 0, err
			}
			extra := ""
			if mode == "EOS" {
				extra = fmt.Sprintf(" txn_markers=%d", r.markers)
			}
			fmt.Printf("commit=%-6s %s trial %d: %8.0f records/s  (join %s, processing %s)%s\n",
				cad, mode, round+1, r.rate(), r.join.Round(time.Millisecond), r.steady.Round(time.Millisecond), extra)
			return r.rate(), nil
		})
		if err != nil {
			return nil, fmt.Errorf("commit %s: %w", cad, err)
		}
	}
	sum := &summary{about: []string{"broker: " + note, fmt.Sprintf(
		"config: %d records, %d partitions, %d-byte values; BatchSize=%d, every other field the processor's default; %d trials each, alternating ALO, EOS",
		o.records, o.partitions, o.valueSize, o.batch, o.trials)}}
	t := sum.table("records/s, median (min-max), per commit cadence:", "commit", "ALO", "EOS", "eos/alo")
	for ci, cad := range o.cadences {
		a, e := rates[ci]["ALO"], rates[ci]["EOS"]
		t.add(cad, medianRange(a), medianRange(e), fmt.Sprintf("%.2f", median(e)/median(a)))
	}
	return sum, nil
}

type eosResult struct {
	records int
	join    time.Duration // Run start to the first batch
	steady  time.Duration // first batch to committed == end
	markers int64
}

func (r eosResult) rate() float64 { return float64(r.records) / r.steady.Seconds() }

func eosTrial(ctx context.Context, o eosOptions, adm *admin, in string, ends []int64, cadence time.Duration, eos bool) (eosResult, error) {
	out := stack.UniqueName("eosbench-out")
	if err := adm.createTopic(ctx, out, o.partitions); err != nil {
		return eosResult{}, err
	}
	defer adm.deleteTopics(out)
	group := stack.UniqueName(map[bool]string{false: "eosbench-alo", true: "eosbench-eos"}[eos])
	output := processor.NewOutput(out, codec.Bytes(), codec.Bytes())
	var first atomic.Int64
	p, err := processor.New(processor.Config{
		Membership:     processor.Membership{Brokers: o.brokers},
		Group:          group,
		BatchSize:      o.batch,
		CommitInterval: cadence,
		ExactlyOnce:    eos,
	}, []processor.Input[[]byte, []byte]{{Topic: in, Key: codec.Bytes(), Value: codec.Bytes()}},
		processor.HandlerFunc[[]byte, []byte](func(_ context.Context, b *processor.Batch[[]byte, []byte]) error {
			first.CompareAndSwap(0, time.Now().UnixNano())
			return sendAll(output, b)
		}))
	if err != nil {
		return eosResult{}, err
	}
	probe, err := newOffsetProbe(o.brokers, group, in, ends)
	if err != nil {
		return eosResult{}, err
	}
	defer probe.close()
	start := time.Now()
	run := startRun(ctx, p.Run)
	if err := probe.await(ctx, 50*time.Millisecond, start.Add(o.trialTimeout), run.done); err != nil {
		return eosResult{}, errors.Join(fmt.Errorf("-trial-timeout %s: %w", o.trialTimeout, err), run.stop())
	}
	end := time.Now()
	if err := run.stop(); err != nil {
		return eosResult{}, fmt.Errorf("Run: %w", err)
	}
	firstAt := time.Unix(0, first.Load())
	r := eosResult{records: o.records, join: firstAt.Sub(start), steady: end.Sub(firstAt)}
	if eos {
		if _, total, err := highWatermarks(probe.c, out, o.partitions); err == nil {
			r.markers = total - int64(o.records)
		}
	}
	return r, nil
}

// sendAll sends every record of b unchanged to out: the identity handler.
func sendAll(out processor.Output[[]byte, []byte], b *processor.Batch[[]byte, []byte], hdrs ...processor.Header) error {
	for i := range b.Records {
		if err := out.Send(b, b.Records[i].Key, b.Records[i].Value, hdrs...); err != nil {
			return err
		}
	}
	return nil
}
