// Command eosbench measures the processor's exactly-once throughput next to its
// at-least-once throughput in one run, at several transaction (commit) cadences, and
// prints the ratio.
//
// Usage (starts a single-node Kafka unless -brokers or $KAFKA_BROKERS names one):
//
//	go run ./integration/eosbench [-records 500000] [-trials 3] [-commit 100ms,1s]
//
// # What is measured
//
// The input topic (-partitions partitions) is preloaded once with -records records:
// 12-byte keys and -value-size byte values. Every trial then runs a processor in this
// process with a fresh consumer group and a fresh output topic, an identity handler that
// Sends each record of the batch to the output (codec.Bytes on both sides), and the same
// Config except ExactlyOnce: at-least-once (idempotent producer, offsets committed
// asynchronously every CommitInterval after the outputs are acknowledged) or exactly-once
// (outputs and offsets in one transaction every CommitInterval, input read
// read_committed). A trial ends when the group's committed offsets equal the input's end
// offsets (polled every 50 ms through a consumer of the group that does not subscribe),
// the same end condition for both modes. records/s is -records over the time from the first batch handed to the handler
// until that end; the join before it (for exactly-once it includes InitTransactions) is
// printed separately. Trials alternate ALO, EOS, ALO, EOS... per cadence, so drift of a
// shared machine hits both modes alike; medians and the eos/alo ratio of the medians are
// printed per cadence (with min..max). The end is seen when a commit lands, so a trial
// also pays up to one CommitInterval after its last record, in both modes: with the
// default 500,000 records (a few seconds per trial on a small machine) that weighs on the
// 1s cadence; raise -records to shrink it. For exactly-once trials the number of transaction markers in the
// output (high watermarks minus records) is printed: about one per partition touched per
// transaction.
//
// With the single-node broker the launcher starts, topics have replication 1: the
// exactly-once cost measured is the transaction protocol's (AddPartitions, the offsets
// sent, EndTxn and the markers), not replication. Run against a three-node cluster with
// -brokers to include acks from replicas.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
)

type options struct {
	brokers      string
	records      int
	partitions   int
	valueSize    int
	trials       int
	batch        int
	cadences     []time.Duration
	trialTimeout time.Duration
	timeout      time.Duration
}

func main() {
	var o options
	var cadences string
	flag.StringVar(&o.brokers, "brokers", os.Getenv(stack.EnvKafkaBrokers), "bootstrap servers of a running Kafka (default $KAFKA_BROKERS); empty: start a single-node Kafka from the Maven Central jars")
	flag.IntVar(&o.records, "records", 500_000, "records preloaded into the input topic and consumed by every trial")
	flag.IntVar(&o.partitions, "partitions", 8, "partitions of the input and output topics")
	flag.IntVar(&o.valueSize, "value-size", 100, "value size in bytes (keys are 12 bytes)")
	flag.IntVar(&o.trials, "trials", 5, "trials per mode and cadence (alternating ALO, EOS)")
	flag.IntVar(&o.batch, "batch", 1000, "processor.Config.BatchSize")
	flag.StringVar(&cadences, "commit", "100ms,1s", "comma-separated CommitInterval values (EOS: one transaction per interval)")
	flag.DurationVar(&o.trialTimeout, "trial-timeout", 3*time.Minute, "bound on one trial")
	flag.DurationVar(&o.timeout, "timeout", 8*time.Minute, "bound on the whole run (broker start and preload included)")
	flag.Parse()
	for _, c := range strings.Split(cadences, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(c))
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "eosbench: -commit %q: want positive durations like 100ms,1s\n", c)
			os.Exit(2)
		}
		o.cadences = append(o.cadences, d)
	}
	if o.records <= 0 || o.partitions <= 0 || o.trials <= 0 || o.valueSize < 0 {
		fmt.Fprintln(os.Stderr, "eosbench: -records, -partitions and -trials must be positive")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "eosbench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	fmt.Printf("command: go run ./integration/eosbench %s\n", strings.Join(os.Args[1:], " "))
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()

	brokerNote := "external cluster (" + o.brokers + ")"
	if o.brokers == "" {
		start := time.Now()
		k, err := stack.StartKafka(ctx, stack.KafkaOptions{})
		if err != nil {
			return err
		}
		defer k.Close()
		o.brokers = k.Bootstrap()
		brokerNote = fmt.Sprintf("single-node Kafka %s started by the harness in %s (replication 1)", stack.DefaultKafkaVersion, time.Since(start).Round(time.Millisecond))
	}
	fmt.Printf("broker: %s\n", brokerNote)
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": o.brokers, "log_level": 3})
	if err != nil {
		return err
	}
	defer ac.Close()
	in := stack.UniqueName("eosbench-in")
	if err := createTopic(ctx, ac, in, o.partitions); err != nil {
		return err
	}
	defer deleteTopic(ac, in)
	t0 := time.Now()
	if err := preload(ctx, o, in); err != nil {
		return err
	}
	ends, err := endOffsets(ctx, ac, in, o.partitions, kafka.IsolationLevelReadUncommitted)
	if err != nil {
		return err
	}
	fmt.Printf("preload: %d records (%d-byte values) into %d partitions in %s\n", o.records, o.valueSize, o.partitions, time.Since(t0).Round(time.Millisecond))
	fmt.Printf("config: BatchSize=%d, every other field the processor's default; trials alternate ALO, EOS\n\n", o.batch)

	type key struct {
		cadence time.Duration
		eos     bool
	}
	rates := map[key][]float64{}
	for _, cad := range o.cadences {
		for trial := 1; trial <= o.trials; trial++ {
			for _, eos := range []bool{false, true} {
				if ctx.Err() != nil {
					return fmt.Errorf("run bound (-timeout %s) reached", o.timeout)
				}
				r, err := runTrial(ctx, o, ac, in, ends, cad, eos)
				if err != nil {
					return fmt.Errorf("commit %s, %s trial %d: %w", cad, mode(eos), trial, err)
				}
				rates[key{cad, eos}] = append(rates[key{cad, eos}], r.rate())
				extra := ""
				if eos {
					extra = fmt.Sprintf(" txn_markers=%d", r.markers)
				}
				fmt.Printf("commit=%-6s %s trial %d: %8.0f records/s  (join %s, processing %s)%s\n",
					cad, mode(eos), trial, r.rate(), r.join.Round(time.Millisecond), r.steady.Round(time.Millisecond), extra)
			}
		}
	}
	fmt.Println()
	for _, cad := range o.cadences {
		a, e := rates[key{cad, false}], rates[key{cad, true}]
		alo, eos := median(a), median(e)
		fmt.Printf("commit=%-6s median ALO %8.0f records/s (%.0f..%.0f), EOS %8.0f records/s (%.0f..%.0f), eos/alo = %.2f\n",
			cad, alo, slices.Min(a), slices.Max(a), eos, slices.Min(e), slices.Max(e), eos/alo)
	}
	return nil
}

func mode(eos bool) string {
	if eos {
		return "EOS"
	}
	return "ALO"
}

type result struct {
	records int
	join    time.Duration // Run start to the first batch
	steady  time.Duration // first batch to committed == end
	markers int64
}

func (r result) rate() float64 { return float64(r.records) / r.steady.Seconds() }

func runTrial(ctx context.Context, o options, ac *kafka.AdminClient, in string, ends map[int32]int64, cadence time.Duration, eos bool) (result, error) {
	out := stack.UniqueName("eosbench-out")
	if err := createTopic(ctx, ac, out, o.partitions); err != nil {
		return result{}, err
	}
	defer deleteTopic(ac, out)
	group := stack.UniqueName("eosbench-" + strings.ToLower(mode(eos)))
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
			for _, r := range b.Records {
				if err := output.Send(b, r.Key, r.Value); err != nil {
					return err
				}
			}
			return nil
		}))
	if err != nil {
		return result{}, err
	}
	probe, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": o.brokers, "group.id": group, "enable.auto.commit": false, "log_level": 3})
	if err != nil {
		return result{}, err
	}
	defer probe.Close()
	tctx, cancel := context.WithTimeout(ctx, o.trialTimeout)
	defer cancel()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(tctx) }()
	var end time.Time
	for end.IsZero() {
		select {
		case err := <-errc:
			return result{}, fmt.Errorf("Run returned before the end: %v", err)
		case <-tctx.Done():
			p.Close()
			return result{}, fmt.Errorf("committed offsets did not reach the end within -trial-timeout %s", o.trialTimeout)
		case <-time.After(50 * time.Millisecond):
		}
		if done, err := committedAtEnd(probe, in, ends); err == nil && done {
			end = time.Now()
		}
	}
	cancel()
	if err := <-errc; err != nil {
		return result{}, fmt.Errorf("Run: %w", err)
	}
	r := result{records: o.records, join: time.Unix(0, first.Load()).Sub(start), steady: end.Sub(time.Unix(0, first.Load()))}
	if eos {
		if hw, err := endOffsets(ctx, ac, out, o.partitions, kafka.IsolationLevelReadUncommitted); err == nil {
			for _, h := range hw {
				r.markers += h
			}
			r.markers -= int64(o.records)
		}
	}
	return r, nil
}

// committedAtEnd reports whether the group's committed offsets equal ends. It asks with a
// consumer of the group that never subscribes (so it does not join): the admin client's
// ListConsumerGroupOffsets can crash the process when the group's coordinator answers
// NOT_COORDINATOR, as it does for a new group on a fresh broker (librdkafka #5040:
// rd_kafka_handle_OffsetFetch calls rd_kafka_cgrp_op on the admin client's NULL cgrp).
func committedAtEnd(probe *kafka.Consumer, topic string, ends map[int32]int64) (bool, error) {
	tps := make([]kafka.TopicPartition, 0, len(ends))
	for p := range ends {
		tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p})
	}
	got, err := probe.Committed(tps, 5000)
	if err != nil {
		return false, err
	}
	for _, tp := range got {
		if tp.Error != nil || int64(tp.Offset) != ends[tp.Partition] {
			return false, tp.Error
		}
	}
	return true, nil
}

func endOffsets(ctx context.Context, ac *kafka.AdminClient, topic string, partitions int, iso kafka.IsolationLevel) (map[int32]int64, error) {
	req := map[kafka.TopicPartition]kafka.OffsetSpec{}
	for p := range int32(partitions) {
		req[kafka.TopicPartition{Topic: &topic, Partition: p}] = kafka.LatestOffsetSpec
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := ac.ListOffsets(cctx, req, kafka.SetAdminIsolationLevel(iso))
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	for tp, info := range res.ResultInfos {
		if info.Error.Code() != kafka.ErrNoError {
			return nil, info.Error
		}
		out[tp.Partition] = int64(info.Offset)
	}
	return out, nil
}

func createTopic(ctx context.Context, ac *kafka.AdminClient, name string, partitions int) error {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := ac.CreateTopics(cctx, []kafka.TopicSpecification{{Topic: name, NumPartitions: partitions, ReplicationFactor: -1}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	if res[0].Error.Code() != kafka.ErrNoError {
		return fmt.Errorf("create topic %s: %w", name, res[0].Error)
	}
	for {
		md, err := ac.GetMetadata(&name, false, 2000)
		if err == nil {
			if tm, ok := md.Topics[name]; ok && len(tm.Partitions) == partitions && !slices.ContainsFunc(tm.Partitions, func(p kafka.PartitionMetadata) bool { return p.Leader < 0 }) {
				return nil
			}
		}
		select {
		case <-cctx.Done():
			return fmt.Errorf("topic %s has no leaders: %w", name, cctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func deleteTopic(ac *kafka.AdminClient, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ac.DeleteTopics(ctx, []string{name})
}

// preload writes the input: key "key-%08d", a value of -value-size bytes, spread evenly
// over the partitions, idempotent with acks=all.
func preload(ctx context.Context, o options, topic string) error {
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": o.brokers, "enable.idempotence": true, "acks": "all",
		"linger.ms": 20, "batch.size": 1 << 20, "log_level": 3})
	if err != nil {
		return err
	}
	defer p.Close()
	dr := make(chan kafka.Event, 100_000)
	failed := make(chan error, 1)
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		for n := 0; n < o.records; {
			select {
			case ev := <-dr:
				if m, ok := ev.(*kafka.Message); ok {
					n++
					if m.TopicPartition.Error != nil {
						select {
						case failed <- m.TopicPartition.Error:
						default:
						}
					}
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	value := make([]byte, o.valueSize)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	for i := range o.records {
		m := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(i % o.partitions)},
			Key: fmt.Appendf(nil, "key-%08d", i), Value: value}
		for {
			err := p.Produce(m, dr)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			p.Flush(100)
		}
	}
	select {
	case <-acked:
	case <-ctx.Done():
		return fmt.Errorf("preload: %w", ctx.Err())
	}
	select {
	case err := <-failed:
		return fmt.Errorf("preload: a record was not acknowledged: %w", err)
	default:
	}
	return nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
