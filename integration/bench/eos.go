package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
)

type eosOptions struct {
	input
	trials       int
	batch        int
	cadences     []time.Duration
	trialTimeout time.Duration
	timeout      time.Duration
}

// eosMain runs the eos scenario and returns the exit code.
func eosMain(args []string) int {
	var o eosOptions
	var cadences string
	fs := o.flagSet("eos", 500_000, 8, 100)
	fs.IntVar(&o.trials, "trials", 5, "trials per mode and cadence (alternating ALO, EOS)")
	fs.IntVar(&o.batch, "batch", 1000, "processor.Config.BatchSize")
	fs.StringVar(&cadences, "commit", "100ms,1s", "comma-separated CommitInterval values (EOS: one transaction per interval)")
	fs.DurationVar(&o.trialTimeout, "trial-timeout", 3*time.Minute, "bound on one trial")
	fs.DurationVar(&o.timeout, "timeout", 8*time.Minute, "bound on the whole run (broker start and preload included)")
	fs.Parse(args)
	for _, c := range splitList(cadences) {
		d, err := time.ParseDuration(c)
		if err != nil || d <= 0 {
			return usageError("eos", fmt.Errorf("-commit %q: want positive durations like 100ms,1s", c))
		}
		o.cadences = append(o.cadences, d)
	}
	if o.records <= 0 || o.partitions <= 0 || o.trials <= 0 || o.valueSize < 0 || len(o.cadences) == 0 {
		return usageError("eos", fmt.Errorf("-records, -partitions, -trials and -commit must be positive"))
	}
	fmt.Println("command:", commandLine())
	return runScenario(func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		return eosRun(ctx, o)
	})
}

func eosRun(ctx context.Context, o eosOptions) error {
	in := stack.UniqueName("eosbench-in")
	adm, note, done, err := o.setUp(ctx, "", -1, in)
	if err != nil {
		return err
	}
	defer done()
	fmt.Println("broker:", note)
	took, ends, err := o.preloadInput(ctx, in, kafka.ConfigMap{"enable.idempotence": true, "acks": "all", "linger.ms": 20, "batch.size": 1 << 20})
	if err != nil {
		return err
	}
	fmt.Printf("preload: %d records (%d-byte values) into %d partitions in %s\n", o.records, o.valueSize, o.partitions, took.Round(time.Millisecond))
	fmt.Printf("config: BatchSize=%d, every other field the processor's default; trials alternate ALO, EOS\n\n", o.batch)

	rates := make([][2][]float64, len(o.cadences)) // per cadence: ALO, EOS
	for ci, cad := range o.cadences {
		for trial := 1; trial <= o.trials; trial++ {
			for mi, eos := range []bool{false, true} {
				if ctx.Err() != nil {
					return fmt.Errorf("run bound (-timeout %s) reached", o.timeout)
				}
				r, err := eosTrial(ctx, o, adm, in, ends, cad, eos)
				if err != nil {
					return fmt.Errorf("commit %s, %s trial %d: %w", cad, eosMode(eos), trial, err)
				}
				rates[ci][mi] = append(rates[ci][mi], r.rate())
				extra := ""
				if eos {
					extra = fmt.Sprintf(" txn_markers=%d", r.markers)
				}
				fmt.Printf("commit=%-6s %s trial %d: %8.0f records/s  (join %s, processing %s)%s\n",
					cad, eosMode(eos), trial, r.rate(), r.join.Round(time.Millisecond), r.steady.Round(time.Millisecond), extra)
			}
		}
	}
	fmt.Println()
	for ci, cad := range o.cadences {
		a, e := rates[ci][0], rates[ci][1]
		fmt.Printf("commit=%-6s median ALO %s records/s, EOS %s records/s, eos/alo = %.2f\n",
			cad, medianRange(a), medianRange(e), median(e)/median(a))
	}
	return nil
}

func eosMode(eos bool) string {
	if eos {
		return "EOS"
	}
	return "ALO"
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
	group := stack.UniqueName("eosbench-" + strings.ToLower(eosMode(eos)))
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
	errc := make(chan error, 1)
	tctx, cancel := context.WithTimeout(ctx, o.trialTimeout)
	defer cancel()
	start := time.Now()
	go func() { errc <- p.Run(tctx) }()
	for {
		select {
		case err := <-errc:
			return eosResult{}, fmt.Errorf("Run returned before the end: %v", err)
		case <-tctx.Done():
			p.Close()
			return eosResult{}, fmt.Errorf("committed offsets did not reach the end within -trial-timeout %s", o.trialTimeout)
		case <-time.After(50 * time.Millisecond):
		}
		if _, all := probe.committed(5 * time.Second); all {
			break
		}
	}
	end := time.Now()
	cancel()
	if err := <-errc; err != nil {
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
