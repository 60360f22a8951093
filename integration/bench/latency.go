package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/integration/stack"
)

type latencyResult struct {
	contestant string
	records    int // measured (after warm-up)
	batches    int
	out        []time.Duration // sorted
	batch      []time.Duration // sorted
	cpuPct     float64
}

func pct(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	i := int(p * float64(len(xs)-1))
	return xs[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

func (l latencyResult) line() string {
	return fmt.Sprintf("%-8s output p50 %s p99 %s p99.9 %s max %s (%d records) | handler p50 %s p99 %s (%d batches, %.0f records/batch) | process cpu %.0f%%",
		l.contestant, ms(pct(l.out, .5)), ms(pct(l.out, .99)), ms(pct(l.out, .999)), ms(pct(l.out, 1)), l.records,
		ms(pct(l.batch, .5)), ms(pct(l.batch, .99)), l.batches, l.perBatch(), l.cpuPct)
}

func (l latencyResult) perBatch() float64 { return float64(l.records) / float64(max(l.batches, 1)) }

func stamp(b []byte) (time.Time, bool) {
	if len(b) < 8 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b))), true
}

// latency runs contestant c on a fresh input topic that a load producer writes at a fixed
// rate, while a reader measures when each record's copy appears in the output topic.
func (e *env) latency(ctx context.Context, c string) (latencyResult, error) {
	o := e.o
	in, out := stack.UniqueName("bench-lat-in"), stack.UniqueName("bench-lat-out")
	for _, t := range []string{in, out} {
		if err := e.adm.createTopic(ctx, t, o.partitions); err != nil {
			return latencyResult{}, err
		}
	}
	defer e.adm.deleteTopics(in, out)
	group := stack.UniqueName("bench-lat-" + c)

	var mu sync.Mutex
	type sample struct {
		produced time.Time
		lat      time.Duration
	}
	var batchLat []sample
	r := run{
		brokers: o.brokers, group: group, in: in, out: out,
		batch: o.batch, batchWait: o.batchWait, commitInterval: o.latencyCommit,
		consumer: mergeAny(o.consumer), producer: mergeAny(o.producer),
		codec: o.samsaCodec, first: &firstMark{},
		onBatch: func(values [][]byte) {
			now := time.Now()
			var oldest time.Time
			for _, v := range values {
				if t, ok := stamp(v); ok && (oldest.IsZero() || t.Before(oldest)) {
					oldest = t
				}
			}
			mu.Lock()
			if !oldest.IsZero() {
				batchLat = append(batchLat, sample{oldest, now.Sub(oldest)})
			}
			mu.Unlock()
		},
	}
	run := startRun(ctx, func(ctx context.Context) error { return runContestant(ctx, c, r) })
	defer run.stop()
	if err := e.waitStable(ctx, group, run); err != nil {
		return latencyResult{}, err
	}

	// The reader: every partition of the output from the beginning, no group.
	rd, err := newReader(o.brokers, group+"-reader", out, o.partitions)
	if err != nil {
		return latencyResult{}, err
	}
	defer rd.Close()
	var outLat []sample
	reader := startRun(ctx, func(ctx context.Context) error {
		for ctx.Err() == nil {
			if m, ok := rd.Poll(50).(*kafka.Message); ok && m.TopicPartition.Error == nil {
				now := time.Now()
				if t, ok := stamp(m.Value); ok {
					outLat = append(outLat, sample{t, now.Sub(t)})
				}
			}
		}
		return nil
	})
	defer reader.stop()

	// The load producer.
	lp, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers": o.brokers, "linger.ms": 1, "acks": "all", "enable.idempotence": true,
		"go.delivery.report.fields": "none", "log_level": 3,
	})
	if err != nil {
		return latencyResult{}, err
	}
	defer lp.Close()
	go func() {
		for range lp.Events() {
		}
	}()
	cpu0 := cpuTime()
	start := time.Now()
	sent := 0
	tick := time.NewTicker(time.Millisecond)
	for now := range tick.C {
		elapsed := now.Sub(start)
		if elapsed >= o.latencyDuration {
			break
		}
		due := int(elapsed.Seconds() * float64(o.latencyRate))
		for ; sent < due; sent++ {
			v := make([]byte, o.valueSize)
			binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
			m := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &in, Partition: int32(sent % o.partitions)}, Key: key(sent), Value: v}
			if err := lp.Produce(m, nil); err != nil {
				tick.Stop()
				return latencyResult{}, fmt.Errorf("load producer: %w", err)
			}
		}
		if ctx.Err() != nil {
			tick.Stop()
			return latencyResult{}, ctx.Err()
		}
	}
	tick.Stop()
	wall := time.Since(start)
	cpu := cpuTime() - cpu0
	lp.Flush(10_000)

	// Wait for the reader to see every record.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, n, _ := highWatermarks(lp, out, o.partitions)
		if n >= int64(sent) {
			break
		}
		select {
		case <-run.done:
			return latencyResult{}, fmt.Errorf("contestant stopped: %v", run.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	time.Sleep(200 * time.Millisecond)
	reader.stop()
	if err := run.stop(); err != nil {
		return latencyResult{}, err
	}

	cut := start.Add(o.latencyWarmup)
	res := latencyResult{contestant: c, cpuPct: 100 * cpu.Seconds() / wall.Seconds()}
	for _, s := range outLat {
		if !s.produced.Before(cut) {
			res.out = append(res.out, s.lat)
		}
	}
	mu.Lock()
	for _, s := range batchLat {
		if !s.produced.Before(cut) {
			res.batch = append(res.batch, s.lat)
		}
	}
	mu.Unlock()
	res.records = len(res.out)
	res.batches = len(res.batch)
	if res.records == 0 {
		return latencyResult{}, errors.New("no record reached the output topic")
	}
	slices.Sort(res.out)
	slices.Sort(res.batch)
	return res, nil
}

// waitStable waits until the group is stable with every input partition assigned.
func (e *env) waitStable(ctx context.Context, group string, run *procRun) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err := e.adm.ac.DescribeConsumerGroups(cctx, []string{group})
		cancel()
		if err == nil && len(res.ConsumerGroupDescriptions) == 1 {
			d := res.ConsumerGroupDescriptions[0]
			n := 0
			for _, m := range d.Members {
				n += len(m.Assignment.TopicPartitions)
			}
			if d.State == kafka.ConsumerGroupStateStable && n == e.o.partitions {
				return nil
			}
		}
		select {
		case <-run.done:
			return fmt.Errorf("contestant stopped before the group was stable: %v", run.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("the group did not become stable within 60s")
}
