package processor

import (
	"context"
	"errors"

	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/telemetry"
)

// Step is one partition's decode → handler → error-policy stage on its own, without a
// broker: the stage a running processor puts between its consumer and its producer, with
// the same decoding, handler, retries, narrowing of a failing batch to its failing
// records and dead letters. samsatest's HandlerDriver is built on it. A Step is not safe
// for concurrent use; a Factory's handler keeps its state from one Handle to the next.
type Step[K, V any] struct {
	r     *runner[K, V]
	calls int
}

// Step returns the stage partition of p runs: a handler from p's factory (a shared
// Handler is itself), p's error policy, group, logger and telemetry. p need not run.
func (p *Processor[K, V]) Step(partition int32) *Step[K, V] {
	s := &Step[K, V]{}
	h := p.factory(partition)
	s.r = p.newRunner(partition, HandlerFunc[K, V](func(ctx context.Context, b *Batch[K, V]) error {
		s.calls++
		return h.Handle(ctx, b)
	}), p.tel.ProcessorObserver(p.cfg.Group, partition))
	return s
}

// newRunner is partition's runner around h: the one constructor of the stage, for the
// pipeline and for Step.
func (p *Processor[K, V]) newRunner(partition int32, h Handler[K, V], obs telemetry.Observer) *runner[K, V] {
	return &runner[K, V]{inputs: p.inputs, h: h, policy: p.cfg.ErrorPolicy, group: p.cfg.Group,
		slot: partition, spare: &p.outs, log: p.log, obs: obs}
}

// Handle runs inputs as the partition's next batch. outs is what the processor would
// produce, in order, dead letters (to DeadLetterTopic) included; calls counts the
// handler's invocations (retries, and one per record when a failing batch is narrowed);
// err is what would stop the processor (nothing of the batch would then be committed),
// or ctx's error when ctx ended first.
func (s *Step[K, V]) Handle(ctx context.Context, inputs []Message) (outs []Message, calls int, err error) {
	msgs := make([]record.Message, len(inputs))
	for i, in := range inputs {
		msgs[i] = record.Message{Topic: in.Topic, Partition: in.Partition, Offset: in.Offset,
			Key: in.Key, Value: in.Value, Timestamp: in.Timestamp, Headers: toRecordHeaders(in.Headers)}
	}
	s.calls = 0
	s.r.ctx, s.r.wait = ctx, ctx
	got, err := s.r.handle(ctx, msgs)
	if errors.Is(err, errAbandoned) {
		err = ctx.Err()
	}
	// The runner reuses its output slices: copy what the caller keeps.
	outs = make([]Message, len(got))
	for i, m := range got {
		outs[i] = Message{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key,
			Value: m.Value, Timestamp: m.Timestamp, Headers: fromRecordHeaders(m.Headers)}
	}
	return outs, s.calls, err
}

// DeadLetterTopic is where the step's error policy dead-letters records, "" when it
// does not.
func (s *Step[K, V]) DeadLetterTopic() string {
	if final := s.r.policy.final(); final.kind == kindDeadLetter {
		return final.topic
	}
	return ""
}
