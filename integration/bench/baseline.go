package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// The baseline: the strongest straightforward confluent-kafka-go loop with the framework's
// guarantees (commit after ack, offsets stored in order per partition) that we know of.
//
//   - One goroutine polls the consumer and fills a batch per partition. A full batch, or
//     one whose oldest record waited batchWait, is handed to the identity "handler": each
//     consumed *kafka.Message is re-targeted at the output topic and produced as is
//     (Produce copies key and value into librdkafka, so nothing is allocated per record
//     here), with its batch as the opaque.
//   - One goroutine drains the producer's delivery reports (fields trimmed to none) and
//     counts them down per batch. When a batch is complete, the offsets of the completed
//     prefix of that partition's in-flight batches are stored (StoreOffsets is safe from
//     any goroutine), so an offset is never stored past an unacknowledged batch.
//   - librdkafka commits stored offsets every auto.commit.interval.ms; a revoke waits for
//     the revoked partitions' batches and commits synchronously.
//   - Every partition may have any number of batches in flight; the producer's queue
//     bounds them (a full queue waits 1 ms and retries, as the framework does).
type baseline struct {
	r   run
	c   *kafka.Consumer
	p   *kafka.Producer
	out string

	parts map[int32]*bpart // poll goroutine only (the rebalance callback runs on it)

	// handoff, when set, carries full batches from the poll goroutine to a producing
	// goroutine, so Poll and Produce overlap ("baseline-2g").
	handoff chan handoff

	// queueFullWait is how long Produce waits before retrying a full producer queue.
	queueFullWait time.Duration

	errMu sync.Mutex
	err   error
}

type bpart struct {
	id      int32
	topic   *string
	fill    []*kafka.Message // poll goroutine only
	firstAt time.Time

	mu       sync.Mutex
	inflight []*bbatch // FIFO; inflight[head:] are in flight
	head     int
	revoked  bool
}

type handoff struct {
	msgs []*kafka.Message
	bt   *bbatch
}

type bbatch struct {
	part      *bpart
	next      kafka.Offset // offset after the batch's last record
	remaining atomic.Int64 // outputs not yet acknowledged, +1 until all are handed over
	done      bool         // under part.mu
}

func (b *baseline) fail(err error) {
	b.errMu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.errMu.Unlock()
}

func (b *baseline) failed() error {
	b.errMu.Lock()
	defer b.errMu.Unlock()
	return b.err
}

// runLoop is the same loop at the settings that make it fastest here (loopConsumerTuning,
// loopProducerTuning) instead of the framework's, retrying a full producer queue after
// 100 µs: the strongest hand-written loop, the yardstick samsa's ratios are taken against.
func runLoop(ctx context.Context, r run) error {
	return runBaseline(ctx, r, false, loopConsumerTuning(), loopProducerTuning())
}

// runBaseline runs the baseline; twoGoroutines: baseline-2g.
func runBaseline(ctx context.Context, r run, twoGoroutines bool, consumerTuning, producerTuning map[string]any) error {
	c, err := kafka.NewConsumer(baselineConsumerConfig(r.brokers, r.group, r.commitInterval, consumerTuning, r.consumer))
	if err != nil {
		return err
	}
	p, err := kafka.NewProducer(baselineProducerConfig(r.brokers, producerTuning, r.producer))
	if err != nil {
		c.Close()
		return err
	}
	b := &baseline{r: r, c: c, p: p, out: r.out, parts: map[int32]*bpart{}, queueFullWait: time.Millisecond}
	if consumerTuning != nil {
		b.queueFullWait = 100 * time.Microsecond
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); drainLogs(c.Logs()) }()
	go func() { defer wg.Done(); drainLogs(p.Logs()) }()
	go func() { defer wg.Done(); b.deliveries() }()
	producerDone := make(chan struct{})
	if twoGoroutines {
		b.handoff = make(chan handoff, 64)
		go func() {
			defer close(producerDone)
			for h := range b.handoff {
				b.produce(ctx, h.msgs, h.bt)
			}
		}()
	} else {
		close(producerDone)
	}

	err = b.loop(ctx)
	if b.handoff != nil {
		close(b.handoff)
	}
	<-producerDone
	// Close serves the final revoke (which waits for in-flight batches and commits).
	if cerr := c.Close(); cerr != nil && err == nil {
		err = cerr
	}
	p.Flush(10_000)
	p.Close()
	wg.Wait()
	if err == nil {
		err = b.failed()
	}
	return err
}

func drainLogs(ch chan kafka.LogEvent) {
	for range ch {
	}
}

func (b *baseline) loop(ctx context.Context) error {
	if err := b.c.SubscribeTopics([]string{b.r.in}, b.rebalance); err != nil {
		return err
	}
	for ctx.Err() == nil {
		if err := b.failed(); err != nil {
			return err
		}
		timeout := 100
		var due time.Time
		for _, p := range b.parts {
			if len(p.fill) > 0 && (due.IsZero() || p.firstAt.Before(due)) {
				due = p.firstAt
			}
		}
		if !due.IsZero() {
			timeout = max(0, min(timeout, int(time.Until(due.Add(b.r.batchWait)).Milliseconds())))
		}
		switch ev := b.c.Poll(timeout).(type) {
		case *kafka.Message:
			if ev.TopicPartition.Error != nil {
				continue
			}
			p := b.parts[ev.TopicPartition.Partition]
			if p == nil {
				continue
			}
			if len(p.fill) == 0 {
				p.firstAt = time.Now()
			}
			p.fill = append(p.fill, ev)
			if len(p.fill) >= b.r.batch {
				b.handle(ctx, p)
			}
		case kafka.Error:
			if ev.IsFatal() {
				return ev
			}
		}
		if !due.IsZero() {
			now := time.Now()
			for _, p := range b.parts {
				if len(p.fill) > 0 && now.Sub(p.firstAt) >= b.r.batchWait {
					b.handle(ctx, p)
				}
			}
		}
	}
	return nil
}

// handle is the identity handler plus the hand-over to the producer.
func (b *baseline) handle(ctx context.Context, p *bpart) {
	b.r.first.mark()
	msgs := p.fill
	bt := &bbatch{part: p, next: msgs[len(msgs)-1].TopicPartition.Offset + 1}
	bt.remaining.Store(int64(len(msgs)) + 1)
	if b.r.onBatch != nil {
		values := make([][]byte, len(msgs))
		for i, m := range msgs {
			values[i] = m.Value
		}
		b.r.onBatch(values)
	}
	p.mu.Lock()
	p.inflight = append(p.inflight, bt)
	p.mu.Unlock()
	if b.handoff != nil {
		b.handoff <- handoff{msgs: msgs, bt: bt}
		p.fill = make([]*kafka.Message, 0, b.r.batch)
		return
	}
	b.produce(ctx, msgs, bt)
	clear(msgs)
	p.fill = msgs[:0]
}

// produce sends a batch's outputs and releases the hand-over count.
func (b *baseline) produce(ctx context.Context, msgs []*kafka.Message, bt *bbatch) {
	var hdrs []kafka.Header
	if b.r.header {
		hdrs = []kafka.Header{{Key: "traceparent", Value: []byte(constantTraceparent)}}
	}
	for _, m := range msgs {
		m.TopicPartition = kafka.TopicPartition{Topic: &b.out, Partition: kafka.PartitionAny}
		m.Opaque = bt
		m.Timestamp = time.Time{}
		m.Headers = hdrs
		for {
			err := b.p.Produce(m, nil)
			if err == nil {
				break
			}
			var kerr kafka.Error
			if errors.As(err, &kerr) && kerr.Code() == kafka.ErrQueueFull && ctx.Err() == nil {
				time.Sleep(b.queueFullWait)
				continue
			}
			b.fail(fmt.Errorf("produce: %w", err))
			break
		}
	}
	b.countDown(bt)
}

func (b *baseline) deliveries() {
	for ev := range b.p.Events() {
		switch ev := ev.(type) {
		case *kafka.Message:
			bt, _ := ev.Opaque.(*bbatch)
			if bt == nil {
				continue
			}
			if ev.TopicPartition.Error != nil {
				// Never stored: the batch stays unacknowledged and the trial fails.
				b.fail(fmt.Errorf("delivery: %w", ev.TopicPartition.Error))
				continue
			}
			b.countDown(bt)
		case kafka.Error:
			if ev.IsFatal() {
				b.fail(ev)
			}
		}
	}
}

// countDown completes bt when its last output is acknowledged and stores the offset after
// the completed prefix of its partition's batches.
func (b *baseline) countDown(bt *bbatch) {
	if bt.remaining.Add(-1) != 0 {
		return
	}
	p := bt.part
	p.mu.Lock()
	defer p.mu.Unlock()
	bt.done = true
	next := kafka.Offset(-1)
	for p.head < len(p.inflight) && p.inflight[p.head].done {
		next = p.inflight[p.head].next
		p.inflight[p.head] = nil
		p.head++
	}
	if p.head == len(p.inflight) {
		p.inflight, p.head = p.inflight[:0], 0
	} else if p.head > 64 && 2*p.head > len(p.inflight) {
		n := copy(p.inflight, p.inflight[p.head:])
		clear(p.inflight[n:])
		p.inflight, p.head = p.inflight[:n], 0
	}
	if next < 0 || p.revoked {
		return
	}
	if _, err := b.c.StoreOffsets([]kafka.TopicPartition{{Topic: p.topic, Partition: p.id, Offset: next}}); err != nil {
		var kerr kafka.Error
		if errors.As(err, &kerr) && kerr.Code() == kafka.ErrState {
			return // no longer assigned
		}
		b.fail(fmt.Errorf("store offsets: %w", err))
	}
}

func (b *baseline) rebalance(c *kafka.Consumer, ev kafka.Event) error {
	switch ev := ev.(type) {
	case kafka.AssignedPartitions:
		for _, tp := range ev.Partitions {
			topic := *tp.Topic
			b.parts[tp.Partition] = &bpart{id: tp.Partition, topic: &topic, fill: make([]*kafka.Message, 0, b.r.batch)}
		}
		if err := c.IncrementalAssign(ev.Partitions); err != nil {
			b.fail(err)
		}
	case kafka.RevokedPartitions:
		lost := c.AssignmentLost()
		deadline := time.Now().Add(30 * time.Second)
		for _, tp := range ev.Partitions {
			p := b.parts[tp.Partition]
			if p == nil {
				continue
			}
			delete(b.parts, tp.Partition)
			for !lost && time.Now().Before(deadline) {
				p.mu.Lock()
				empty := p.head == len(p.inflight)
				p.mu.Unlock()
				if empty || b.failed() != nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
			p.mu.Lock()
			p.revoked = true
			p.mu.Unlock()
		}
		if !lost {
			if _, err := c.Commit(); err != nil {
				var kerr kafka.Error
				if !errors.As(err, &kerr) || kerr.Code() != kafka.ErrNoOffset {
					b.fail(fmt.Errorf("commit on revoke: %w", err))
				}
			}
		}
		if err := c.IncrementalUnassign(ev.Partitions); err != nil && !c.IsClosed() {
			b.fail(err)
		}
	}
	return nil
}
