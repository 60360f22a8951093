package processor

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/samsa-go/samsa/internal/failpoint"
	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/telemetry"
)

// Headers a dead-lettered record carries besides its own.
const (
	HeaderError           = "samsa.dlq.error"     // the error message, at most 1 KiB
	HeaderStage           = "samsa.dlq.stage"     // decode, handle or produce
	HeaderSourceTopic     = "samsa.dlq.topic"     // where the record was read
	HeaderSourcePartition = "samsa.dlq.partition" // decimal
	HeaderSourceOffset    = "samsa.dlq.offset"    // decimal
	HeaderSourceTimestamp = "samsa.dlq.timestamp" // the record's timestamp, Unix milliseconds
	HeaderGroup           = "samsa.dlq.group"     // the processor's consumer group
)

// anyPartition lets the producer partition by key hash.
const anyPartition = -1

// errAbandoned ends a worker without applying a policy: its slot is being revoked or was
// lost, and what is not committed will be processed again by the next owner.
var errAbandoned = errors.New("abandoned")

// worker runs one slot: batch, decode, handle, produce, and store offsets in order once
// every output of a batch and of all batches before it is acknowledged.
type worker[K, V any] struct {
	p    *Processor[K, V]
	s    *group.Slot
	prod *produce.Producer
	h    Handler[K, V]
	cfg  Config

	pending    []record.Message // taken from the slot, not yet batched
	head       int              // pending[head:] are waiting
	batchStart time.Time        // when the oldest waiting record was taken

	inflight []*flight    // in batch order
	done     chan *flight // completed produce rounds

	handlerCtx    context.Context
	cancelHandler context.CancelFunc

	applied map[string]int64 // with a checkpoint: per topic, records below are applied
	skipped int

	metricAttrs attribute.Set // group and partition
}

// flight is one batch's outputs on their way to the broker.
type flight struct {
	inputs []record.Message
	outs   []record.Message
	next   []record.Offset
	doneCh chan<- *flight

	ctx        context.Context // the batch span's context
	span       trace.Span      // the send span; nil without outputs
	arrivedAt  time.Time       // when the batch's first record was taken
	producedAt time.Time

	// Worker goroutine only:
	arrived      bool // the current produce round completed
	retries      int  // produce rounds retried
	deadLettered bool // the inputs were sent to the dead-letter topic instead

	remaining atomic.Int64
	mu        sync.Mutex
	failed    []*record.Message
	err       error
}

// Delivered is called on the producer's delivery goroutine.
func (f *flight) Delivered(m *record.Message, err error) {
	if err != nil {
		f.mu.Lock()
		f.failed = append(f.failed, m)
		if f.err == nil {
			f.err = err
		}
		f.mu.Unlock()
	}
	if f.remaining.Add(-1) == 0 {
		f.doneCh <- f
	}
}

func newWorker[K, V any](p *Processor[K, V], s *group.Slot, prod *produce.Producer) *worker[K, V] {
	return &worker[K, V]{
		p:    p,
		s:    s,
		prod: prod,
		cfg:  p.cfg,
		done: make(chan *flight, p.cfg.MaxInFlightBatches+1),
		metricAttrs: attribute.NewSet(semconv.MessagingConsumerGroupName(p.cfg.Group),
			semconv.MessagingDestinationPartitionID(strconv.Itoa(int(s.ID)))),
	}
}

func (w *worker[K, V]) run() (err error) {
	w.h = w.p.factory(w.s.ID)
	if w.h == nil {
		return fmt.Errorf("processor: handler factory returned nil for partition %d", w.s.ID)
	}
	if c, ok := w.h.(interface{ Close() error }); ok {
		defer func() {
			if cerr := c.Close(); cerr != nil {
				w.p.log.Warn("processor: handler Close", "partition", w.s.ID, "err", cerr)
			}
		}()
	}
	// Handlers get a context that outlives the revoke signal by DrainTimeout, so a batch
	// being handled when the partition is revoked can still finish and be committed.
	w.handlerCtx, w.cancelHandler = context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	defer func() { w.cancelHandler(); <-watchDone }()
	go func() {
		defer close(watchDone)
		select {
		case <-w.handlerCtx.Done():
			return
		case <-w.s.Context().Done():
		}
		if w.s.Lost() {
			w.cancelHandler() // another member may own the partition already
			return
		}
		t := time.NewTimer(w.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-w.handlerCtx.Done():
		case <-t.C:
			w.cancelHandler()
		}
	}()

	if w.p.cp != nil {
		if err := w.loadApplied(); err != nil {
			return nil // revoked while the store was unreachable
		}
	}
	err = w.loop()
	if w.skipped > 0 {
		w.p.log.Info("processor: skipped records already applied", "partition", w.s.ID, "records", w.skipped)
	}
	if errors.Is(err, errAbandoned) || errors.Is(err, group.ErrNotOwned) {
		return nil
	}
	return err
}

func (w *worker[K, V]) loop() error {
	ctx := w.s.Context()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		if ctx.Err() != nil {
			return w.drain()
		}
		if err := w.completeHead(); err != nil {
			return err
		}
		waiting := len(w.pending) - w.head
		if waiting < w.cfg.QueueRecords {
			select {
			case <-w.s.Ready():
				w.take()
				waiting = len(w.pending) - w.head
			default:
			}
		}
		canStart := len(w.inflight) < w.cfg.MaxInFlightBatches
		if canStart && waiting > 0 && (waiting >= w.cfg.BatchSize || time.Since(w.batchStart) >= w.cfg.BatchWait) {
			if err := w.processNext(); err != nil {
				return err
			}
			continue
		}

		var wake <-chan time.Time
		if canStart && waiting > 0 {
			timer.Reset(time.Until(w.batchStart.Add(w.cfg.BatchWait)))
			wake = timer.C
		}
		var ready <-chan struct{}
		if waiting < w.cfg.QueueRecords {
			ready = w.s.Ready()
		}
		select {
		case <-ready:
			w.take()
		case f := <-w.done:
			f.arrived = true
		case <-wake:
		case <-ctx.Done():
		}
	}
}

func (w *worker[K, V]) take() {
	msgs := w.s.Take()
	if len(msgs) == 0 {
		return
	}
	if w.head == len(w.pending) {
		w.pending, w.head = w.pending[:0], 0
		w.batchStart = time.Now()
	} else if w.head > 0 {
		// Move the waiting records to the front, so a steady backlog reuses the array
		// instead of growing it for the whole run.
		n := copy(w.pending, w.pending[w.head:])
		clear(w.pending[n:])
		w.pending, w.head = w.pending[:n], 0
	}
	w.pending = append(w.pending, msgs...)
}

// processNext handles the next batch and puts its outputs in flight.
func (w *worker[K, V]) processNext() error {
	n := min(len(w.pending)-w.head, w.cfg.BatchSize)
	arrived := w.batchStart
	inputs := make([]record.Message, n)
	copy(inputs, w.pending[w.head:w.head+n])
	clear(w.pending[w.head : w.head+n])
	w.head += n
	if w.head == len(w.pending) {
		w.pending, w.head = w.pending[:0], 0
	} else {
		w.batchStart = time.Now() // the rest waits for its own batch
	}

	if len(w.p.inputs) > 1 {
		inputs = mergeByTimestamp(inputs)
	}
	tel := w.p.tel
	ctx, links := tel.BatchParent(w.handlerCtx, inputs)
	topic := inputs[0].Topic
	attrs := telemetry.KafkaAttrs(topic, w.s.ID, w.cfg.Group)
	ctx, span := tel.Tracer.Start(ctx, "process "+topic, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...),
		trace.WithAttributes(attrs...), trace.WithAttributes(
			semconv.MessagingOperationTypeProcess, semconv.MessagingOperationName("process"),
			semconv.MessagingBatchMessageCount(n),
			attribute.Int64("samsa.batch.first_offset", inputs[0].Offset),
			attribute.Int64("samsa.batch.last_offset", inputs[n-1].Offset)))
	if tel.RecordKeys && n == 1 && inputs[0].Key != nil {
		span.SetAttributes(semconv.MessagingKafkaMessageKey(string(inputs[0].Key)))
	}
	started := time.Now()
	outs, err := w.handleBatch(ctx, inputs)
	mattrs := metric.WithAttributeSet(w.metricAttrs)
	tel.BatchSize.Record(ctx, int64(n), mattrs)
	tel.HandleDuration.Record(ctx, time.Since(started).Seconds(), mattrs)
	tel.RecordsConsumed.Add(ctx, int64(n), mattrs)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "batch failed")
		span.End()
		// Let earlier batches finish and commit, so a restart resumes at the failure.
		if derr := w.drain(); derr != nil {
			return derr
		}
		return err
	}
	f := &flight{inputs: inputs, outs: outs, next: nextOffsets(inputs), doneCh: w.done, ctx: ctx, arrivedAt: arrived, producedAt: time.Now()}
	if len(outs) > 0 {
		var pspan trace.Span
		_, pspan = tel.Tracer.Start(ctx, "send", trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(semconv.MessagingSystemKafka, semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("send"),
				semconv.MessagingBatchMessageCount(len(outs))))
		if pspan.SpanContext().IsValid() {
			// Every output carries the send span as its creation context (W3C
			// traceparent). The headers are formatted once per batch and shared: records
			// without headers of their own get the same capacity-capped slice (an append
			// to one copies), the others a copy of theirs with the trace headers set.
			pctx := trace.ContextWithSpan(ctx, pspan)
			var shared []record.Header
			tel.Inject(pctx, &shared)
			shared = shared[:len(shared):len(shared)]
			for i := range outs {
				if len(outs[i].Headers) == 0 {
					outs[i].Headers = shared
				} else {
					tel.Inject(pctx, &outs[i].Headers)
				}
			}
		}
		f.span = pspan
	}
	span.End()
	w.inflight = append(w.inflight, f)
	failpoint.Hit("before-produce") // handled, nothing produced
	if w.p.txn != nil {
		return w.p.txn.produce(w.handlerCtx, w.s, f)
	}
	w.produce(f, f.outs)
	return nil
}

// handleBatch decodes inputs and runs the handler under the error policy. It returns the
// outputs to produce, dead-letter records included.
func (w *worker[K, V]) handleBatch(ctx context.Context, inputs []record.Message) ([]record.Message, error) {
	outs := make([]record.Message, 0, len(inputs)) // most handlers send about one output per input
	batch := &Batch[K, V]{Partition: w.s.ID, Records: make([]Record[K, V], 0, len(inputs)), outs: &outs}
	var source []*record.Message // source[i] is the input of batch.Records[i]
	for i := range inputs {
		if w.applied != nil && inputs[i].Offset < w.applied[inputs[i].Topic] {
			w.skipped++ // its effects are in the store already; only its offset is committed
			continue
		}
		r, err := w.decode(&inputs[i])
		if err != nil {
			if err := w.fail(&inputs[i], StageDecode, err, &outs); err != nil {
				return nil, err
			}
			continue
		}
		batch.Records = append(batch.Records, r)
		source = append(source, &inputs[i])
	}
	if len(batch.Records) == 0 {
		return outs, nil
	}
	kept := len(outs) // dead letters of decode failures stay whatever the handler does

	pol := w.cfg.ErrorPolicy
	for attempt := 0; ; attempt++ {
		outs = outs[:kept]
		err := w.handle(ctx, batch)
		if err == nil {
			return outs, nil
		}
		if w.handlerCtx.Err() != nil {
			return nil, errAbandoned
		}
		if pol.kind == kindRetry && attempt < pol.retries {
			w.p.log.Warn("processor: batch failed, retrying", "topic", source[0].Topic, "partition", w.s.ID,
				"offset", source[0].Offset, "records", len(batch.Records), "attempt", attempt+1, "err", err)
			if !w.sleep(pol.backoff.wait(attempt)) {
				return nil, errAbandoned
			}
			continue
		}
		if len(batch.Records) == 1 {
			outs = outs[:kept]
			if err := w.fail(source[0], StageHandle, err, &outs); err != nil {
				return nil, err
			}
			return outs, nil
		}
		break
	}

	// The batch keeps failing: run its records one at a time to find the failing ones.
	outs = outs[:kept]
	all := batch.Records
	for i := range all {
		mark := len(outs)
		batch.Records = all[i : i+1]
		err := w.handle(ctx, batch)
		if err == nil {
			continue
		}
		if w.handlerCtx.Err() != nil {
			return nil, errAbandoned
		}
		outs = outs[:mark]
		if err := w.fail(source[i], StageHandle, err, &outs); err != nil {
			return nil, err
		}
	}
	return outs, nil
}

// loadApplied asks the checkpoint which records of the slot are applied, retrying while
// the store is unreachable (nothing of the slot runs meanwhile).
func (w *worker[K, V]) loadApplied() error {
	w.applied = map[string]int64{}
	for _, tp := range w.s.Partitions() {
		for attempt := 0; ; attempt++ {
			next, err := w.p.cp.Applied(w.handlerCtx, tp.Topic, tp.Partition)
			if err == nil {
				w.applied[tp.Topic] = next
				break
			}
			w.p.log.Warn("processor: checkpoint unavailable, retrying", "topic", tp.Topic, "partition", tp.Partition, "attempt", attempt+1, "err", err)
			if !w.sleep(Backoff{}.wait(attempt)) {
				return errAbandoned
			}
		}
	}
	return nil
}

// handle calls the handler, turning a panic into an error.
func (w *worker[K, V]) handle(ctx context.Context, b *Batch[K, V]) (err error) {
	defer func() {
		if r := recover(); r != nil {
			w.p.log.Error("processor: handler panicked", "partition", w.s.ID, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %v", ErrHandlerPanic, r)
		}
	}()
	return w.h.Handle(ctx, b)
}

func (w *worker[K, V]) decode(m *record.Message) (Record[K, V], error) {
	in := w.input(m.Topic)
	r := Record[K, V]{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Timestamp: m.Timestamp}
	var err error
	if m.Key == nil {
		r.NullKey = true
	} else if r.Key, err = in.Key.Decode(m.Key); err != nil {
		return r, fmt.Errorf("key: %w", err)
	}
	if m.Value == nil {
		r.Tombstone = true
	} else if r.Value, err = in.Value.Decode(m.Value); err != nil {
		return r, fmt.Errorf("value: %w", err)
	}
	if len(m.Headers) > 0 {
		r.Headers = make([]Header, len(m.Headers))
		for i, h := range m.Headers {
			r.Headers[i] = Header{Key: h.Key, Value: h.Value}
		}
	}
	return r, nil
}

func (w *worker[K, V]) input(topic string) *Input[K, V] {
	for i := range w.p.inputs {
		if w.p.inputs[i].Topic == topic {
			return &w.p.inputs[i]
		}
	}
	return &w.p.inputs[0] // unreachable: the engine subscribes to the inputs only
}

// fail applies the final policy to one record: Stop returns the error, Skip logs it,
// DeadLetter appends the dead-letter record to outs.
func (w *worker[K, V]) fail(m *record.Message, stage Stage, cause error, outs *[]record.Message) error {
	perr := &Error{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Stage: stage, Err: cause}
	pol := w.cfg.ErrorPolicy.final()
	switch pol.kind {
	case kindSkip:
		w.p.tel.RecordsSkipped.Add(context.Background(), 1, metric.WithAttributeSet(w.metricAttrs))
		w.p.log.Warn("processor: skipping record", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "stage", string(stage), "err", cause)
		return nil
	case kindDeadLetter:
		w.p.tel.DeadLettered.Add(context.Background(), 1, metric.WithAttributeSet(w.metricAttrs))
		w.p.log.Warn("processor: dead-lettering record", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "stage", string(stage), "to", pol.topic, "err", cause)
		*outs = append(*outs, w.deadLetter(pol.topic, m, stage, cause))
		return nil
	}
	return perr
}

func (w *worker[K, V]) deadLetter(topic string, m *record.Message, stage Stage, cause error) record.Message {
	msg := cause.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	h := make([]record.Header, 0, len(m.Headers)+7)
	h = append(h, m.Headers...)
	h = append(h,
		record.Header{Key: HeaderError, Value: []byte(msg)},
		record.Header{Key: HeaderStage, Value: []byte(stage)},
		record.Header{Key: HeaderSourceTopic, Value: []byte(m.Topic)},
		record.Header{Key: HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(m.Partition), 10)},
		record.Header{Key: HeaderSourceOffset, Value: strconv.AppendInt(nil, m.Offset, 10)},
		record.Header{Key: HeaderSourceTimestamp, Value: strconv.AppendInt(nil, m.Timestamp.UnixMilli(), 10)},
		record.Header{Key: HeaderGroup, Value: []byte(w.cfg.Group)},
	)
	return record.Message{Topic: topic, Partition: anyPartition, Key: m.Key, Value: m.Value, Headers: h, Timestamp: m.Timestamp}
}

// produce sends msgs as one round of f. A message the client refuses at once counts as a
// failed delivery.
func (w *worker[K, V]) produce(f *flight, msgs []record.Message) {
	ptrs := make([]*record.Message, len(msgs))
	for i := range msgs {
		ptrs[i] = &msgs[i]
	}
	w.produceRound(f, ptrs)
}

func (w *worker[K, V]) produceRound(f *flight, msgs []*record.Message) {
	f.mu.Lock()
	f.failed, f.err = nil, nil
	f.mu.Unlock()
	f.arrived = false
	f.remaining.Store(int64(len(msgs)) + 1) // +1 until every message is handed over
	for _, m := range msgs {
		if err := w.prod.Produce(w.handlerCtx, m, f); err != nil {
			f.Delivered(m, err)
		}
	}
	f.Delivered(nil, nil)
}

// completeHead stores the offsets of completed batches at the head of the flight queue,
// in order, and applies the error policy to a head batch whose outputs failed.
func (w *worker[K, V]) completeHead() error {
	for {
		select {
		case f := <-w.done:
			f.arrived = true
			continue
		default:
		}
		break
	}
	for len(w.inflight) > 0 && w.inflight[0].arrived {
		f := w.inflight[0]
		f.mu.Lock()
		ferr, failed := f.err, f.failed
		f.mu.Unlock()
		if ferr != nil && w.p.txn != nil {
			// The transaction cannot commit: the coordinator aborts and rewinds.
			w.p.log.Warn("processor: exactly-once: output not acknowledged", "partition", w.s.ID, "failed", len(failed), "err", ferr)
		} else if ferr != nil {
			if err := w.produceFailed(f, ferr, failed); err != nil {
				return err
			}
			if !f.arrived { // a new round is in flight
				return nil
			}
		}
		w.inflight[0] = nil
		w.inflight = w.inflight[1:]
		if err := w.commit(f); err != nil {
			return err
		}
	}
	return nil
}

// commit stores a completed batch's offsets, with its span and metrics.
func (w *worker[K, V]) commit(f *flight) error {
	tel := w.p.tel
	mattrs := metric.WithAttributeSet(w.metricAttrs)
	if f.span != nil {
		f.span.End()
		tel.ProduceDuration.Record(f.ctx, time.Since(f.producedAt).Seconds(), mattrs)
		tel.RecordsProduced.Add(f.ctx, int64(len(f.outs)), mattrs)
	}
	_, span := tel.Tracer.Start(f.ctx, "commit "+f.next[0].Topic, trace.WithAttributes(
		semconv.MessagingSystemKafka, semconv.MessagingOperationTypeSettle, semconv.MessagingOperationName("commit"),
		attribute.Int64("samsa.commit.offset", f.next[0].Offset)))
	var err error
	if w.p.txn == nil { // exactly-once offsets go through the transaction
		failpoint.Hit("alo-before-store") // outputs acknowledged, offsets not stored
		err = w.s.Store(f.next...)
	}
	if err != nil && !errors.Is(err, group.ErrNotOwned) {
		span.RecordError(err)
		span.SetStatus(codes.Error, "store offsets")
	}
	span.End()
	if err == nil {
		tel.CommitLatency.Record(f.ctx, time.Since(f.arrivedAt).Seconds(), mattrs)
	}
	return err
}

// produceFailed handles a batch some of whose outputs were not acknowledged: Retry
// produces the failed ones again; then Skip gives up on them, DeadLetter sends the
// batch's inputs to the dead-letter topic, and Stop stops the processor.
func (w *worker[K, V]) produceFailed(f *flight, ferr error, failed []*record.Message) error {
	f.retries++
	pol := w.cfg.ErrorPolicy
	first := f.inputs[0]
	if w.handlerCtx.Err() != nil {
		// Shutting down or revoked past the drain bound: the failure may be ours (the queue
		// wait was cancelled), so leave the batch uncommitted for the next owner.
		return errAbandoned
	}
	w.p.log.Warn("processor: outputs not acknowledged", "topic", first.Topic, "partition", first.Partition,
		"offset", first.Offset, "failed", len(failed), "err", ferr)
	if errors.Is(ferr, produce.ErrFatal) {
		// The producer is unusable: no policy can make progress, and skipping would drop
		// outputs of records that were handled fine.
		return &Error{Topic: first.Topic, Partition: first.Partition, Offset: first.Offset, Stage: StageProduce, Err: ferr}
	}
	if pol.kind == kindRetry && f.retries <= pol.retries {
		if !w.sleep(pol.backoff.wait(f.retries - 1)) {
			return errAbandoned
		}
		w.produceRound(f, failed)
		return nil
	}
	if f.deadLettered {
		// The dead-letter writes themselves failed.
		return &Error{Topic: first.Topic, Partition: first.Partition, Offset: first.Offset, Stage: StageDeadLetter, Err: ferr}
	}
	switch final := pol.final(); final.kind {
	case kindSkip:
		w.p.log.Warn("processor: skipping batch whose outputs failed", "topic", first.Topic, "partition", first.Partition, "offset", first.Offset, "records", len(f.inputs))
		w.p.tel.RecordsSkipped.Add(context.Background(), int64(len(f.inputs)), metric.WithAttributeSet(w.metricAttrs))
		f.arrived = true
		return nil
	case kindDeadLetter:
		f.deadLettered = true
		dl := make([]record.Message, len(f.inputs))
		for i := range f.inputs {
			dl[i] = w.deadLetter(final.topic, &f.inputs[i], StageProduce, ferr)
		}
		f.outs = dl
		w.produce(f, f.outs)
		return nil
	}
	return &Error{Topic: first.Topic, Partition: first.Partition, Offset: first.Offset, Stage: StageProduce, Err: ferr}
}

// drain waits (bounded by DrainTimeout) for in-flight batches and stores their offsets.
// Records not yet handled are left for the next owner.
func (w *worker[K, V]) drain() error {
	deadline := time.NewTimer(w.cfg.DrainTimeout)
	defer deadline.Stop()
	for len(w.inflight) > 0 {
		if w.s.Lost() {
			return errAbandoned
		}
		if err := w.completeHead(); err != nil {
			return err
		}
		if len(w.inflight) == 0 {
			break
		}
		select {
		case f := <-w.done:
			f.arrived = true
		case <-deadline.C:
			w.p.log.Warn("processor: drain timed out; unacknowledged batches are left uncommitted", "partition", w.s.ID, "batches", len(w.inflight))
			return errAbandoned
		}
	}
	return nil
}

// sleep waits d unless the handler context ends first.
func (w *worker[K, V]) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.handlerCtx.Done():
		return false
	}
}

// nextOffsets returns, per topic, the offset after the batch's last record.
func nextOffsets(inputs []record.Message) []record.Offset {
	var out []record.Offset
	for i := range inputs {
		m := &inputs[i]
		found := false
		for j := range out {
			if out[j].Topic == m.Topic {
				out[j].Offset = max(out[j].Offset, m.Offset+1)
				found = true
				break
			}
		}
		if !found {
			out = append(out, record.Offset{TopicPartition: record.TopicPartition{Topic: m.Topic, Partition: m.Partition}, Offset: m.Offset + 1})
		}
	}
	return out
}

// mergeByTimestamp orders a batch of several co-partitioned topics by record timestamp,
// keeping each topic's own (offset) order: a k-way merge that always takes the head with
// the earliest timestamp. A join then sees a table update before a later event of the
// other topic when both arrived in one batch, as Kafka Streams picks the earliest
// timestamp across a task's partitions.
func mergeByTimestamp(in []record.Message) []record.Message {
	var topics []string
	byTopic := map[string][]record.Message{}
	for _, m := range in {
		if _, ok := byTopic[m.Topic]; !ok {
			topics = append(topics, m.Topic)
		}
		byTopic[m.Topic] = append(byTopic[m.Topic], m)
	}
	if len(topics) < 2 {
		return in
	}
	out := in[:0]
	for len(out) < len(in) {
		best := ""
		for _, t := range topics {
			q := byTopic[t]
			if len(q) == 0 {
				continue
			}
			if best == "" || q[0].Timestamp.Before(byTopic[best][0].Timestamp) {
				best = t
			}
		}
		out = append(out, byTopic[best][0])
		byTopic[best] = byTopic[best][1:]
	}
	return out
}
