package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/effect"
	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/telemetry"
)

// Headers a dead-lettered record carries besides its own.
const (
	HeaderError           = "samsa.dlq.error"     // the error message, at most 1 KiB; a panic's value and calls (function, file.go:line)
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

// runner is the third stage, typed: a step from a batch's inputs to its outputs or a
// failure. It decodes the batch, calls the slot's handler, and applies the error policy
// to what fails there (a record that does not decode, a handler error or panic), turning
// failures into dead letters where the policy says so. It knows nothing of producing:
// for outputs the broker did not acknowledge, the pipeline asks it only which inputs
// they came from (attribute) and for their dead letters. It runs on its slot's worker
// goroutine.
type runner[K, V any] struct {
	inputs []Input[K, V]
	h      Handler[K, V]
	policy Policy
	group  string
	slot   int32
	log    *slog.Logger
	obs    telemetry.Observer
	ctx    context.Context // the handlers' context; see runSlot
	// wait bounds retry backoffs: it ends with the handlers' context and also as soon as
	// the slot is revoked or the processor stops, so a shutdown never waits out a
	// backoff (the failing batch is left uncommitted for the next owner).
	wait context.Context

	applied map[string]int64 // with a checkpoint: per topic, records below are applied
	skipped int

	records []Record[K, V] // reused by every batch: a Batch is valid only during Handle
	// spare holds output slices of settled batches for reuse, shared by the processor's
	// partitions.
	spare *record.Pool
}

// outputs returns an empty slice for a batch's outputs, reusing a settled batch's. Most
// handlers send about one output per input.
func (r *runner[K, V]) outputs(n int) []record.Message { return r.spare.Get(n) }

// recycle takes back a settled batch's outputs: acknowledged, referred to by nothing.
func (r *runner[K, V]) recycle(outs []record.Message) { r.spare.Put(outs) }

// handle decodes inputs and runs the handler under the error policy. It returns the
// outputs to produce, dead-letter records included.
func (r *runner[K, V]) handle(ctx context.Context, inputs []record.Message) ([]record.Message, error) {
	outs := r.outputs(len(inputs))
	if cap(r.records) < len(inputs) {
		r.records = make([]Record[K, V], 0, len(inputs))
	}
	batch := &Batch[K, V]{Partition: r.slot, Records: r.records[:0], outs: &outs}
	// The decoded records must not outlive the call in the reused slice: what they hold
	// would stay live until the partition's next batch, uncounted against its share.
	defer clear(r.records[:len(inputs)]) // the most a batch of these inputs fills
	var source []*record.Message         // source[i] is the input of batch.Records[i]
	for i := range inputs {
		if r.applied != nil && inputs[i].Offset < r.applied[inputs[i].Topic] {
			r.skipped++ // its effects are in the store already; only its offset is committed
			continue
		}
		rec, err := r.decode(&inputs[i])
		if errors.Is(err, codec.ErrUnavailable) {
			m := &inputs[i]
			err = r.untilAvailable("decode", m, err, func() (err error) { rec, err = r.decode(m); return err })
		}
		if errors.Is(err, errAbandoned) {
			return nil, err
		} else if err != nil {
			if err := r.fail(&inputs[i], StageDecode, err, &outs); err != nil {
				return nil, err
			}
			continue
		}
		batch.Records = append(batch.Records, rec)
		source = append(source, &inputs[i])
	}
	if len(batch.Records) == 0 {
		return outs, nil
	}
	kept := len(outs) // dead letters of decode failures stay whatever the handler does
	// A failed call's staged state effects go with its outputs (see WithCheckpoint).
	effects := effect.FromContext(ctx)
	none := effects.Mark()

	pol := r.policy
	handleBatch := func() error {
		outs = outs[:kept]
		effects.Rollback(none)
		return r.call(ctx, batch)
	}
	for attempt := 0; ; attempt++ {
		err := handleBatch()
		if errors.Is(err, codec.ErrUnavailable) {
			err = r.untilAvailable("batch", source[0], err, handleBatch) // not one of Retry's attempts
		}
		if err == nil {
			return outs, nil
		}
		if r.ctx.Err() != nil || errors.Is(err, errAbandoned) {
			return nil, errAbandoned
		}
		if pol.kind == kindRetry && attempt < pol.retries && !errors.Is(err, ErrPermanent) {
			r.obs.Retried("retry")
			r.log.Warn("processor: batch failed, retrying", "topic", source[0].Topic, "partition", r.slot,
				"offset", source[0].Offset, "records", len(batch.Records), "attempt", attempt+1, "err", err)
			if !pol.backoff.Sleep(r.wait, attempt) {
				return nil, errAbandoned
			}
			continue
		}
		if len(batch.Records) == 1 {
			outs = outs[:kept]
			effects.Rollback(none)
			if err := r.fail(source[0], StageHandle, err, &outs); err != nil {
				return nil, err
			}
			return outs, nil
		}
		break
	}

	// The batch keeps failing: run its records one at a time to find the failing ones.
	r.obs.Retried("narrow")
	r.log.Warn("processor: batch keeps failing, handling its records one at a time", "topic", source[0].Topic,
		"partition", r.slot, "offset", source[0].Offset, "records", len(batch.Records))
	outs = outs[:kept]
	effects.Rollback(none)
	all := batch.Records
	for i := range all {
		mark, staged := len(outs), effects.Mark()
		batch.Records = all[i : i+1]
		err := r.call(ctx, batch)
		if errors.Is(err, codec.ErrUnavailable) {
			err = r.untilAvailable("record", source[i], err, func() error {
				outs = outs[:mark]
				effects.Rollback(staged)
				return r.call(ctx, batch)
			})
		}
		if err == nil {
			continue
		}
		if r.ctx.Err() != nil || errors.Is(err, errAbandoned) {
			return nil, errAbandoned
		}
		outs = outs[:mark]
		effects.Rollback(staged)
		if err := r.fail(source[i], StageHandle, err, &outs); err != nil {
			return nil, err
		}
	}
	return outs, nil
}

// attribute finds the inputs whose outputs are among failed, by handling each input of
// the batch again on its own and matching what it sends (topic, key and value) against
// the failed outputs. Handlers may run more than once for a batch anyway. When no input
// can be matched (a handler whose outputs differ from one run to the next), it returns
// every input, as there is no telling which are safe to drop.
func (r *runner[K, V]) attribute(inputs []record.Message, failed []*record.Message) []int {
	all := make([]int, len(inputs))
	for i := range all {
		all[i] = i
	}
	if len(inputs) == 1 || len(failed) == 0 {
		return all
	}
	type id struct{ topic, key, value string }
	want := make(map[id]bool, len(failed))
	for _, m := range failed {
		want[id{m.Topic, string(m.Key), string(m.Value)}] = true
	}
	var guilty []int
	var outs []record.Message
	// The handler runs again only to see what it sends: state effects it stages are
	// dropped, and never made.
	ctx := effect.NewContext(r.ctx, new(effect.Batch))
	for i := range inputs {
		m := &inputs[i]
		if r.applied != nil && m.Offset < r.applied[m.Topic] {
			continue
		}
		rec, err := r.decode(m)
		if err != nil {
			continue // dead-lettered at decode already
		}
		outs = outs[:0]
		b := &Batch[K, V]{Partition: r.slot, Records: []Record[K, V]{rec}, outs: &outs}
		if err := r.call(ctx, b); err != nil {
			continue
		}
		for _, o := range outs {
			if want[id{o.Topic, string(o.Key), string(o.Value)}] {
				guilty = append(guilty, i)
				break
			}
		}
	}
	if len(guilty) == 0 {
		r.log.Warn("processor: cannot tell which records' outputs failed (the handler sends different outputs when run again); dead-lettering the whole batch",
			"topic", inputs[0].Topic, "partition", inputs[0].Partition, "offset", inputs[0].Offset, "records", len(inputs))
		return all
	}
	return guilty
}

// loadApplied asks the checkpoint which records of the slot are applied, retrying while
// the store is unreachable (nothing of the slot runs meanwhile). A permanent error (see
// Checkpoint) is returned at once.
func (r *runner[K, V]) loadApplied(cp Checkpoint, parts []record.TopicPartition) error {
	r.applied = map[string]int64{}
	for _, tp := range parts {
		for attempt := 0; ; attempt++ {
			next, err := cp.Applied(r.ctx, tp.Topic, tp.Partition)
			if err == nil {
				r.applied[tp.Topic] = next
				break
			}
			if permanent(err) {
				return fmt.Errorf("processor: checkpoint refused the applied offset of %s[%d] (retrying cannot help): %w", tp.Topic, tp.Partition, err)
			}
			r.log.Warn("processor: checkpoint unavailable, retrying", "topic", tp.Topic, "partition", tp.Partition, "attempt", attempt+1, "err", err)
			if !(Backoff{}).Sleep(r.wait, attempt) {
				return errAbandoned
			}
		}
	}
	return nil
}

// checkCommitted compares the applied offsets loadApplied read with those the group's
// last commits recorded (see Recorder), asking the coordinator until it answers or the
// slot is revoked.
// It returns the committed offsets.
func (r *runner[K, V]) checkCommitted(committed committedOf) ([]record.Offset, error) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		offs, err := committed(ctx)
		cancel()
		if err == nil {
			r.noteUncommitted(offs)
			return offs, checkBehind(r.applied, offs, r.slot)
		}
		r.log.Warn("processor: committed offsets unavailable, retrying", "partition", r.slot, "attempt", attempt+1, "err", err)
		if !(Backoff{}).Sleep(r.wait, attempt) {
			return nil, errAbandoned
		}
	}
}

// noteUncommitted warns about each input the group has committed nothing of while the
// checkpoint records records of it applied: those records are skipped, their effects
// being in the store. Expected for a group whose first run crashed before it committed;
// otherwise a new group (or one whose commits expired) over an existing table.
func (r *runner[K, V]) noteUncommitted(committed []record.Offset) {
	for topic, next := range r.applied {
		if next <= 0 || slices.ContainsFunc(committed, func(o record.Offset) bool { return o.Topic == topic }) {
			continue
		}
		r.log.Warn("processor: the group has committed nothing of this partition, but the checkpoint records records applied: they are skipped (their effects are in the store). A new group over an existing table, or a group whose commits expired, starts where the table is; to process them again, clear the table",
			"topic", topic, "partition", r.slot, "applied_below", next)
	}
}

// untilAvailable handles a codec dependency's outage (codec.ErrUnavailable: a schema
// registry that does not answer): no record's fault, so no error policy applies and
// nothing is committed meanwhile. It waits, then runs try again (what failed: decoding
// m, or handling the batch starting at m), for as long as the outage lasts, and returns
// try's first other result, or errAbandoned when the slot ends meanwhile.
func (r *runner[K, V]) untilAvailable(what string, m *record.Message, err error, try func() error) error {
	for down := 0; errors.Is(err, codec.ErrUnavailable); down++ {
		r.log.Warn("processor: codec dependency unavailable, retrying "+what, "topic", m.Topic, "partition", m.Partition,
			"offset", m.Offset, "attempt", down+1, "err", err)
		if !r.unavailableBackoff().Sleep(r.wait, down) {
			return errAbandoned
		}
		err = try()
	}
	return err
}

// unavailableBackoff paces retries while a codec's dependency is down: Retry's backoff,
// else the default one.
func (r *runner[K, V]) unavailableBackoff() Backoff {
	if r.policy.kind == kindRetry {
		return r.policy.backoff
	}
	return Backoff{}
}

// call calls the handler, turning a panic into an error that carries the stack and
// matches ErrPanic: "handler panicked: <value>" and the stack.
func (r *runner[K, V]) call(ctx context.Context, b *Batch[K, V]) (err error) {
	defer func() {
		if pe, ok := err.(*group.PanicError); ok {
			r.log.Error("processor: handler panicked", "partition", r.slot, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
		}
	}()
	defer group.Recover(&err, "handler")
	return r.h.Handle(ctx, b)
}

func (r *runner[K, V]) decode(m *record.Message) (Record[K, V], error) {
	in := r.input(m.Topic)
	rec := Record[K, V]{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Timestamp: m.Timestamp}
	var err error
	if m.Key == nil {
		rec.NullKey = true
	} else if rec.Key, err = in.Key.Decode(m.Key); err != nil {
		return rec, fmt.Errorf("key: %w", err)
	}
	if m.Value == nil {
		rec.Tombstone = true
	} else if rec.Value, err = in.Value.Decode(m.Value); err != nil {
		return rec, fmt.Errorf("value: %w", err)
	}
	rec.Headers = fromRecordHeaders(m.Headers)
	return rec, nil
}

func (r *runner[K, V]) input(topic string) *Input[K, V] {
	if len(r.inputs) == 1 {
		return &r.inputs[0]
	}
	for i := range r.inputs {
		if r.inputs[i].Topic == topic {
			return &r.inputs[i]
		}
	}
	return &r.inputs[0] // unreachable: the engine subscribes to the inputs only
}

// fail applies the final policy to one record: Stop returns the error, Skip logs it,
// DeadLetter appends the dead-letter record to outs.
func (r *runner[K, V]) fail(m *record.Message, stage Stage, cause error, outs *[]record.Message) error {
	pol := r.policy.final()
	switch pol.kind {
	case kindSkip:
		r.obs.Skipped(1)
		r.log.Warn("processor: skipping record", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "stage", string(stage), "err", cause)
		return nil
	case kindDeadLetter:
		r.obs.DeadLettered(1)
		r.log.Warn("processor: dead-lettering record", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "stage", string(stage), "to", pol.topic, "err", cause)
		*outs = append(*outs, r.deadLetter(pol.topic, m, stage, cause))
		return nil
	}
	return &Error{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Stage: stage, Err: cause}
}

// maxErrorHeader bounds the error a dead letter carries, in bytes.
const maxErrorHeader = 1024

// deadLetter is m for the dead-letter topic: its key, value and headers, plus headers
// that say where it came from and why it failed.
func (r *runner[K, V]) deadLetter(topic string, m *record.Message, stage Stage, cause error) record.Message {
	msg := cause.Error()
	var hp *group.PanicError
	if errors.As(cause, &hp) {
		msg = hp.Brief() // function names, not the build machine's file paths
	}
	if len(msg) > maxErrorHeader {
		msg = strings.ToValidUTF8(msg[:maxErrorHeader], "")
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
		record.Header{Key: HeaderGroup, Value: []byte(r.group)},
	)
	return record.Message{Topic: topic, Partition: anyPartition, Key: m.Key, Value: m.Value, Headers: h, Timestamp: m.Timestamp}
}

// permanent reports whether err says retrying cannot help, through a Permanent() bool
// method (see Checkpoint).
func permanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// isAbandon reports whether err ends a slot's work without failing the processor.
func isAbandon(err error) bool {
	return errors.Is(err, errAbandoned) || errors.Is(err, group.ErrNotOwned)
}
