package processor

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/effect"
	"github.com/samsa-go/samsa/internal/failpoint"
	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/telemetry"
)

// pipeline runs one slot through the processor's four stages, on the slot's worker
// goroutine:
//
//	slot (group.Slot: the partition's fetched records, in chunks of BatchSize)
//	  → batcher (a full chunk, or what arrived within BatchWait; co-partition merge)
//	  → runner (inputs → outputs or a failure: decode, handler, error policy, dead letters)
//	  → sink (produce, await acknowledgements, offsets to the group or the transaction)
//
// Data flows one way: the pipeline hands each stage's result to the next, and no stage
// calls another. Up to MaxInFlightBatches handled batches wait for their
// acknowledgements while later ones are handled; they settle strictly in batch order, so
// an offset is never stored past a batch whose outputs are not acknowledged. A batch
// whose outputs the broker did not acknowledge goes through the pipeline's own
// delivery-failure step (decide decides, redeliver carries it out).
type pipeline[K, V any] struct {
	s      *group.Slot
	lane   lane // what the sink knows of s
	batch  batcher
	run    *runner[K, V]
	sink   sink
	policy Policy // for outputs that failed; the runner applies it to handling
	obs    telemetry.Observer
	// bound is where the slot's run ends: never for a live processor, at its end offsets
	// for a replay (replaySlot).
	bound bound
	// recorder is the checkpoint's, when it is a Recorder: commits record its offsets.
	recorder Recorder
	// staging: each batch's checkpointed state effects are staged in its handler's
	// context and made once its outputs are acknowledged (see applyEffects), or, with
	// afterCommit (exactly-once), by the sink once the transaction that holds its outputs
	// and offsets commits; lastEffects is then the batch the next one reads through.
	staging     bool
	afterCommit bool
	lastEffects *effect.Batch

	maxInFlight int
	drainBound  time.Duration
	inflight    []*flight    // in batch order
	done        chan *flight // completed delivery rounds
	// units handles each batch's keys (or records) concurrently (Config.Concurrency);
	// nil: each batch is one Handle call on the worker goroutine. failed: a unit ended
	// with an error, no batch starts any more.
	units  *units[K, V]
	failed bool
}

// batcher is the second stage: it hands the pipeline a batch once the slot's oldest chunk
// is full or its first record has waited BatchWait.
type batcher struct {
	s     *group.Slot
	wait  time.Duration
	size  int
	merge bool // several co-partitioned inputs: order each batch by timestamp
}

// next returns the next batch, its size in bytes and when its first record was queued, or
// nil and the time at which the oldest chunk is due (zero when the slot is empty: wait
// for Slot.Ready). A chunk the slot closed early (its byte limit) is due at once.
func (b *batcher) next() (batch []record.Message, size int64, queuedAt, due time.Time) {
	n, first, full := b.s.Peek()
	if n == 0 {
		return nil, 0, time.Time{}, time.Time{}
	}
	if !full && n < b.size && time.Since(first) < b.wait {
		return nil, 0, time.Time{}, first.Add(b.wait)
	}
	batch, size = b.s.Take()
	if b.merge {
		batch = mergeByTimestamp(batch)
	}
	return batch, size, first, time.Time{}
}

// runSlot is the engine's worker for one slot.
func (p *Processor[K, V]) runSlot(s *group.Slot, out sink) (err error) {
	h := p.factory(s.ID)
	if h == nil {
		return fmt.Errorf("processor: handler factory returned nil for partition %d", s.ID)
	}
	if c, ok := h.(interface{ Close() error }); ok {
		defer func() {
			if cerr := c.Close(); cerr != nil {
				p.log.Warn("processor: handler Close", "partition", s.ID, "err", cerr)
			}
		}()
	}
	// Handlers get a context that outlives the revoke signal by StopTimeout, so a batch
	// being handled when the partition is revoked can still finish and be committed.
	handlerCtx, cancelHandler := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	defer func() { cancelHandler(); <-watchDone }()
	go func() {
		defer close(watchDone)
		select {
		case <-handlerCtx.Done():
			return
		case <-s.Context().Done():
		}
		if s.Lost() {
			cancelHandler() // another member may own the partition already
			return
		}
		t := time.NewTimer(p.cfg.StopTimeout)
		defer t.Stop()
		select {
		case <-handlerCtx.Done():
		case <-t.C:
			cancelHandler()
		}
	}()

	waitCtx, stopWaits := context.WithCancel(handlerCtx)
	defer stopWaits()
	defer context.AfterFunc(s.Context(), stopWaits)()

	obs := p.tel.ProcessorObserver(p.cfg.Group, s.ID)
	run := p.newRunner(s.ID, h, obs)
	run.ctx, run.wait = handlerCtx, waitCtx
	pl := &pipeline[K, V]{
		s:           s,
		batch:       batcher{s: s, wait: p.cfg.BatchWait, size: p.cfg.BatchSize, merge: len(p.inputs) > 1},
		run:         run,
		lane:        lane{slot: s.ID, epoch: s.Epoch, ctx: s.Context(), owner: s},
		sink:        out,
		policy:      p.cfg.ErrorPolicy,
		obs:         obs,
		staging:     p.staging,
		afterCommit: p.staging && p.cfg.ExactlyOnce,
		maxInFlight: p.cfg.MaxInFlightBatches,
		drainBound:  p.cfg.StopTimeout,
		done:        make(chan *flight, p.cfg.MaxInFlightBatches+1),
	}
	if p.cfg.Concurrency > 1 && p.cfg.Ordering != ByPartition {
		pl.units = newUnits(p.cfg.Concurrency, p.cfg.Ordering, run)
		// Each unit's outputs complete a delivery round of their own.
		pl.done = make(chan *flight, p.cfg.MaxInFlightBatches*(p.cfg.BatchSize+1)+1)
		defer func() { cancelHandler(); pl.units.wait() }() // before the handler's Close
	}
	if p.cp != nil {
		if err := pl.run.loadApplied(p.cp, s.Partitions()); err != nil {
			if isAbandon(err) {
				return nil // revoked while the store was unreachable
			}
			return err // the store refused access
		}
		if rec, ok := p.cp.(Recorder); ok {
			pl.recorder = rec
			committed, err := pl.run.checkCommitted(s.Committed)
			if err == nil {
				// Owed effects come from an exactly-once owner; a group switched to
				// at-least-once since then makes them too.
				err = pl.catchUp(committed, p.readOwed)
			}
			if err != nil {
				if isAbandon(err) {
					return nil
				}
				return err
			}
		}
	}
	if pl.units != nil {
		// Records a previous owner finished after one it could not settle are recorded
		// in the last commit: skip them.
		committed, err := pl.run.checkCommitted(s.Committed)
		if err != nil {
			if isAbandon(err) {
				return nil
			}
			return err
		}
		pl.units.skip = readDone(committed)
	}
	if pl.bound, err = p.replay.bound(handlerCtx, s); err != nil {
		return err
	}
	err = pl.loop()
	pl.storeDone() // batches left unsettled: record what of them is done
	if pl.run.skipped > 0 {
		p.log.Info("processor: skipped records already applied", "partition", s.ID, "records", pl.run.skipped)
	}
	if pl.units != nil && pl.units.skipped > 0 {
		p.log.Info("processor: skipped records a previous owner had done (recorded in its last commit)", "partition", s.ID, "records", pl.units.skipped)
	}
	if isAbandon(err) {
		return nil
	}
	return err
}

func (pl *pipeline[K, V]) loop() error {
	ctx := pl.s.Context()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		if ctx.Err() != nil || pl.failed {
			return pl.drainAndReport()
		}
		if err := pl.settleHead(); err != nil {
			return err
		}
		var wake <-chan time.Time
		if pl.canStart() {
			batch, size, queuedAt, due := pl.batch.next()
			if batch != nil {
				if err := pl.process(batch, size, queuedAt); err != nil {
					return err
				}
				continue
			}
			if !due.IsZero() {
				timer.Reset(time.Until(due))
				wake = timer.C
			}
		}
		select {
		case <-pl.s.Ready():
		case f := <-pl.done:
			pl.delivered(f)
		case u := <-pl.unitFinished():
			if err := pl.finish(u); err != nil {
				return err
			}
		case <-wake:
		case <-pl.bound.check(pl.idle):
		case <-ctx.Done():
		}
		timer.Stop()
	}
}

// bound is where a slot's run ends. The pipeline asks it which inputs of each batch to
// handle, and, while it waits, whether the run is over.
type bound interface {
	// keep returns the inputs of batch to handle and the bytes of those it dropped.
	keep(batch []record.Message) ([]record.Message, int64)
	// check is called while the pipeline waits; idle reports that the slot holds nothing
	// and no batch is in flight. It returns when to be called again (nil: never).
	check(idle func() bool) <-chan time.Time
}

// unbounded is a live processor's bound: every input is handled, the run never ends.
type unbounded struct{}

func (unbounded) keep(batch []record.Message) ([]record.Message, int64) { return batch, 0 }
func (unbounded) check(func() bool) <-chan time.Time                    { return nil }

// keep asks the bound which inputs to handle; the bytes of the dropped ones go back to the
// slot, and of all of them when none is kept.
func (pl *pipeline[K, V]) keep(inputs []record.Message, size int64) ([]record.Message, int64) {
	kept, dropped := pl.bound.keep(inputs)
	if dropped > 0 {
		pl.s.Release(dropped)
		size -= dropped
	}
	if len(kept) == 0 {
		pl.s.Release(size)
	}
	return kept, size
}

// idle reports that the slot holds no record and no batch is in flight.
func (pl *pipeline[K, V]) idle() bool {
	n, _, _ := pl.s.Peek()
	return n == 0 && len(pl.inflight) == 0
}

// canStart reports whether another batch may be handled now: fewer than
// MaxInFlightBatches wait for acknowledgements. What they hold (inputs and outputs) stays
// counted against the slot until they settle, so batches in flight hold the poll
// goroutine back once the slots hold MaxBufferedBytes together, instead of fetching more.
func (pl *pipeline[K, V]) canStart() bool {
	return len(pl.inflight) < pl.maxInFlight && !pl.failed
}

// process runs one batch through the runner and hands its outputs to the sink.
func (pl *pipeline[K, V]) process(inputs []record.Message, size int64, queuedAt time.Time) error {
	if inputs, size = pl.keep(inputs, size); len(inputs) == 0 {
		return nil
	}
	ctx := pl.obs.Batch(pl.run.ctx, inputs)
	var effects *effect.Batch
	if pl.staging {
		effects = new(effect.Batch)
		if pl.afterCommit {
			effects.Follow(pl.lastEffects)
			pl.lastEffects = effects
		}
		ctx = effect.NewContext(ctx, effects)
	}
	if pl.units != nil {
		f := &flight{inputs: inputs, next: nextOffsets(inputs), effects: effects, doneCh: pl.done, ctx: ctx,
			queuedAt: queuedAt, held: size, handledAt: time.Now()}
		pl.inflight = append(pl.inflight, f)
		n := pl.units.dispatch(f)
		if &f.inputs[0] != &inputs[0] {
			pl.s.Recycle(inputs) // regrouped by key into a slice of the flight's own
		}
		if n == 0 { // every record done by a previous owner
			pl.obs.UnitsHandled(ctx, nil, len(f.inputs), 0, nil)
			f.roundDone = true
		}
		return nil
	}
	started := time.Now()
	outs, err := pl.run.handle(ctx, inputs)
	pl.obs.Handled(ctx, len(inputs), time.Since(started), err)
	if err != nil {
		// Let earlier batches finish and commit, so a restart resumes at the failure. A
		// drain cut short (revoked, lost, timed out) leaves them to the next owner but
		// does not swallow the failure: under Stop it still ends Run.
		if derr := pl.drain(); derr != nil && !isAbandon(derr) {
			return derr
		}
		return err
	}
	f := &flight{inputs: inputs, outs: outs, next: nextOffsets(inputs), effects: effects, doneCh: pl.done, ctx: ctx, queuedAt: queuedAt}
	if pl.recorder != nil && (!pl.staging || pl.afterCommit) {
		// Without staging the handler has applied the batch by now; with effects made
		// after the commit, the commit records what was applied before its transaction
		// (the effects of the batches in it are owed, see catchUp).
		withApplied(pl.recorder, f.next)
	}
	out := recordsSize(outs)
	pl.s.Hold(out)
	f.held = size + out
	f.sendCtx = pl.obs.Send(ctx, outs)
	f.sentAt = time.Now()
	pl.inflight = append(pl.inflight, f)
	failpoint.Hit("before-produce") // handled, nothing produced
	return pl.sink.send(pl.run.ctx, pl.lane, f, record.Pointers(f.outs))
}

// settleHead settles the completed batches at the head of the flight queue, in order,
// and carries out the error policy for a head batch whose outputs failed (redeliver).
func (pl *pipeline[K, V]) settleHead() error {
	for {
		select {
		case f := <-pl.done:
			pl.delivered(f)
			continue
		default:
		}
		break
	}
	for len(pl.inflight) > 0 && pl.inflight[0].roundDone {
		f := pl.inflight[0]
		if f.handleErr != nil {
			return f.handleErr // a unit failed: the batch and those after it do not settle
		}
		if err := pl.applyEffects(f); err != nil {
			return err
		}
		if pl.units != nil {
			doneAfter(f.next, pl.inflight[1:])
		}
		err := pl.sink.settle(pl.lane, f)
		if of, ok := err.(*outputsFailed); ok {
			settled, rerr := pl.redeliver(f, of)
			if rerr != nil || !settled {
				return rerr // failed, or a new round is in flight
			}
			if err := pl.applyEffects(f); err != nil {
				return err
			}
			err = pl.sink.settle(pl.lane, f)
		}
		pl.inflight[0] = nil
		pl.inflight = pl.inflight[1:]
		pl.s.Release(f.held)
		if pl.units != nil {
			pl.units.settled(f)
		}
		observed := err
		if isAbandon(err) {
			observed = nil // not a failure: the next owner commits these offsets
		}
		outs := len(f.outs)
		for _, u := range f.unitOuts {
			outs += len(u)
		}
		pl.obs.Settled(f.ctx, f.sendCtx, f.next[0], outs, f.sentAt, f.queuedAt, observed)
		if err != nil {
			return err
		}
		// Every output is acknowledged: nothing refers to the batch's records any more.
		pl.run.recycle(f.outs)
		for _, u := range f.unitOuts {
			pl.run.recycle(u)
		}
		pl.s.Recycle(f.inputs)
	}
	return nil
}

// applyEffects makes the state effects f's handler staged (see internal/effect), once
// every output of the current round is acknowledged (or given up), and before f's
// offsets are stored: a batch whose outputs never reach the broker leaves no effects,
// and its records are handled again. A failure that says retrying cannot help
// (Permanent: a conflict, as when another writer moved the partition's applied offsets,
// or Redis refusing access) stops the processor; any other (Redis out of reach) is
// retried until the store answers or the slot's work is abandoned. With a Recorder, f's
// offsets then record what the store has applied.
func (pl *pipeline[K, V]) applyEffects(f *flight) error {
	if pl.afterCommit || f.effects.Pending() == 0 {
		return nil // exactly-once: the sink makes them once the transaction commits
	}
	if err, _ := f.outcome(); err != nil {
		return nil // outputs failed: the error policy decides first
	}
	failpoint.Hit("alo-before-effects") // outputs acknowledged, state effects not made
	return pl.makeEffects(f)
}

// makeEffects makes f's staged state effects (see applyEffects), and records them in
// f's offsets.
func (pl *pipeline[K, V]) makeEffects(f *flight) error {
	for attempt := 0; ; attempt++ {
		err := f.effects.Commit(pl.run.ctx)
		if err == nil {
			break
		}
		if pl.run.ctx.Err() != nil {
			return errAbandoned
		}
		first := &f.inputs[0]
		if permanent(err) && !pl.s.Owned() {
			return errAbandoned // another owner moved the applied offsets on: its effects
		}
		if permanent(err) {
			return &Error{Topic: first.Topic, Partition: first.Partition, Offset: first.Offset, Stage: StageEffects, Err: err}
		}
		pl.run.log.Warn("processor: state effects not made, retrying", "topic", first.Topic, "partition", first.Partition,
			"offset", first.Offset, "attempt", attempt+1, "err", err)
		if !(Backoff{}).Sleep(pl.run.wait, attempt) {
			return errAbandoned
		}
	}
	if pl.recorder != nil {
		withApplied(pl.recorder, f.next)
	}
	return nil
}

// redeliver carries out the error policy's remedy (see decide) for a batch some of whose
// outputs were not acknowledged. It returns settled when the batch may settle as it is
// (the failed outputs were given up, or went through when produced alone), and false
// with a nil error when a new delivery round of the batch is in flight.
func (pl *pipeline[K, V]) redeliver(f *flight, of *outputsFailed) (settled bool, err error) {
	if pl.run.ctx.Err() != nil {
		// Shutting down or revoked past the drain bound: the failure may be ours (the queue
		// wait was cancelled), so leave the batch uncommitted for the next owner.
		return false, errAbandoned
	}
	f.retries++
	first := &f.inputs[0]
	log := pl.run.log.With("topic", first.Topic, "partition", first.Partition, "offset", first.Offset)
	log.Warn("processor: outputs not acknowledged", "failed", len(of.failed), "err", of.err)
	isolated := false
	for {
		d := decide(pl.policy, failedRound{first: first, round: f.retries, deadLettered: f.deadLettered,
			isolated: isolated, err: of.err, topic: of.failed[0].Topic, failed: len(of.failed)})
		switch d.remedy {
		case remedyResend:
			if !pl.policy.backoff.Sleep(pl.run.wait, d.attempt) {
				return false, errAbandoned
			}
			pl.obs.Retried("resend")
			return false, pl.sink.send(pl.run.ctx, pl.lane, f, of.failed)
		case remedyIsolate:
			refused, ok := pl.isolate(of.failed)
			if !ok {
				return false, errAbandoned
			}
			pl.obs.Retried("isolate")
			log.Warn("processor: produced the failed outputs one at a time", "failed", len(of.failed), "refused_alone", len(refused))
			if len(refused) == 0 {
				f.forgive() // every one went through on its own
				return true, nil
			}
			of, isolated = &outputsFailed{err: of.err, failed: refused}, true
		case remedySkip:
			log.Warn("processor: skipping batch whose outputs failed", "records", len(f.inputs))
			pl.obs.Skipped(len(f.inputs))
			f.forgive()
			return true, nil
		case remedyDeadLetter:
			// Only the inputs whose outputs failed belong in the dead-letter topic: the
			// others' outputs are acknowledged, and dead-lettering them too would duplicate
			// them when the dead letters are redriven. A batch with staged state effects
			// is dead-lettered whole and its effects dropped: they cannot be told apart by
			// record, and a redrive then applies each record's effects once.
			var guilty []int
			if f.effects.Pending() > 0 {
				f.effects.Drop()
				guilty = make([]int, len(f.inputs))
				for i := range guilty {
					guilty[i] = i
				}
				log.Warn("processor: dead-lettering the whole batch and dropping its state effects", "records", len(f.inputs))
			} else {
				guilty = pl.run.attribute(f.inputs, of.failed)
			}
			f.deadLettered = true
			f.outs = make([]record.Message, len(guilty))
			for k, i := range guilty {
				f.outs[k] = pl.run.deadLetter(d.topic, &f.inputs[i], StageProduce, of.err)
			}
			pl.obs.DeadLettered(len(guilty))
			if len(guilty) < len(f.inputs) {
				log.Warn("processor: dead-lettering the records whose outputs failed", "records", len(f.inputs), "dead_lettered", len(guilty))
			}
			return false, pl.sink.send(pl.run.ctx, pl.lane, f, record.Pointers(f.outs))
		default:
			return false, d.err
		}
	}
}

// isolate produces each of msgs on its own, one after the other, and returns those the
// broker refuses alone: a broker refuses a whole produce request for one record it will
// never take (over max.message.bytes, say), failing the records that shared the request
// with it. ok is false when the slot's work was abandoned meanwhile.
func (pl *pipeline[K, V]) isolate(msgs []*record.Message) (refused []*record.Message, ok bool) {
	ch := make(chan *flight, 1)
	for _, m := range msgs {
		alone := &flight{doneCh: ch}
		if err := pl.sink.send(pl.run.ctx, pl.lane, alone, []*record.Message{m}); err != nil {
			return nil, false
		}
		select {
		case <-ch:
		case <-pl.run.ctx.Done():
			return nil, false
		}
		if err, _ := alone.outcome(); err != nil {
			refused = append(refused, m)
		}
	}
	return refused, true
}

// finish is the pipeline's part when a unit of f finished: it produces the unit's
// outputs as a delivery round of their own, and starts the units that may start now. A unit that failed marks f failed (see settleHead).
func (pl *pipeline[K, V]) finish(p *unit[K, V]) error {
	f := p.f
	var err error
	sent := false
	switch {
	case p.err != nil:
		if f.handleErr == nil || isAbandon(f.handleErr) {
			f.handleErr = p.err
		}
		pl.failed = true
		pl.units.stopAt = min(pl.units.stopAt, p.seq)
	case len(p.outs) == 0:
		pl.run.recycle(p.outs)
		p.mark.acked = true
		pl.units.markDone(p.mark)
	default:
		out := recordsSize(p.outs)
		pl.s.Hold(out)
		f.held += out
		f.unitOuts = append(f.unitOuts, p.outs)
		if f.sendCtx == nil {
			f.sendCtx = pl.obs.SendUnits(f.ctx)
			f.sentAt = time.Now()
		}
		pl.obs.Inject(f.sendCtx, p.outs)
		err = pl.sink.send(pl.run.ctx, pl.lane, &flight{doneCh: pl.done, parent: f, mark: p.mark}, record.Pointers(p.outs))
		sent = true
	}
	pl.units.done(p) // after the send: the key's next unit produces after this one
	if f.unfinished--; f.unfinished == 0 {
		pl.obs.UnitsHandled(f.ctx, f.sendCtx, len(f.inputs), time.Since(f.handledAt), f.handleErr)
	}
	if !sent {
		pl.unitSettled(f)
	}
	return err
}

// unitSettled counts one unit of f as settled (finished without outputs, or its
// outputs' round completed); once all are, f's round is complete.
func (pl *pipeline[K, V]) unitSettled(f *flight) {
	f.pending--
	if f.pending == 0 {
		f.roundDone = true
	}
}

// delivered marks a delivery round complete: a batch's, or one unit's, whose failed
// outputs join its batch's.
func (pl *pipeline[K, V]) delivered(f *flight) {
	b := f.parent
	if b == nil {
		f.roundDone = true
		return
	}
	if err, failed := f.outcome(); err != nil {
		b.mu.Lock()
		b.failed = append(b.failed, failed...)
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	} else {
		f.mark.acked = true // its outputs are acknowledged
		pl.units.markDone(f.mark)
	}
	pl.unitSettled(b)
}

// storeDone stores, when the partition's work ends before its batches settled, the
// offset of the first record not settled with the records done after it in the
// metadata (see doneset.go), for the commit on revoke or shutdown: the next owner skips
// them. Nothing is stored for a topic none of whose records is done.
func (pl *pipeline[K, V]) storeDone() {
	if pl.units == nil || len(pl.inflight) == 0 {
		return
	}
	for drained := false; !drained; { // rounds completed but not received yet count too
		select {
		case f := <-pl.done:
			pl.delivered(f)
		default:
			drained = true
		}
	}
	var offs []record.Offset
	for _, m := range pl.inflight[0].inputs {
		i := slices.IndexFunc(offs, func(o record.Offset) bool { return o.Topic == m.Topic })
		if i < 0 {
			offs = append(offs, record.Offset{TopicPartition: record.TopicPartition{Topic: m.Topic, Partition: m.Partition}, Offset: m.Offset})
		} else {
			offs[i].Offset = min(offs[i].Offset, m.Offset)
		}
	}
	doneAfter(offs, pl.inflight)
	offs = slices.DeleteFunc(offs, func(o record.Offset) bool { return o.Metadata == "" })
	if len(offs) == 0 {
		return
	}
	if err := pl.lane.owner.Store(offs...); err == nil {
		pl.run.log.Info("processor: records done after one not settled are recorded in the commit, for the next owner to skip",
			"partition", pl.s.ID, "batches", len(pl.inflight))
	}
}

// unitFinished is where units report that they finished: nil (never) without units.
func (pl *pipeline[K, V]) unitFinished() <-chan *unit[K, V] {
	if pl.units == nil {
		return nil
	}
	return pl.units.finished
}

// drainAndReport drains the slot's batches once its work ends (revoked, stopping) or a
// unit failed: like after a batch that failed on the worker goroutine (see process), the
// batches before the failed one settle first, so a restart resumes at the failure, and a
// drain cut short does not swallow the failure.
func (pl *pipeline[K, V]) drainAndReport() error {
	err := pl.drain()
	if !isAbandon(err) {
		return err
	}
	for _, f := range pl.inflight {
		if f.handleErr != nil && !isAbandon(f.handleErr) {
			return f.handleErr
		}
	}
	return err
}

// drain waits (bounded by StopTimeout) for in-flight batches and settles them. Records
// not yet handled are left for the next owner.
func (pl *pipeline[K, V]) drain() error {
	deadline := time.NewTimer(pl.drainBound)
	defer deadline.Stop()
	for len(pl.inflight) > 0 {
		if pl.s.Lost() {
			return errAbandoned
		}
		if err := pl.settleHead(); err != nil {
			return err
		}
		if len(pl.inflight) == 0 {
			break
		}
		select {
		case f := <-pl.done:
			pl.delivered(f)
		case u := <-pl.unitFinished():
			if err := pl.finish(u); err != nil {
				return err
			}
		case <-deadline.C:
			pl.run.log.Warn("processor: drain timed out; unacknowledged batches are left uncommitted", "partition", pl.s.ID, "batches", len(pl.inflight))
			return errAbandoned
		}
	}
	return nil
}

// recordsSize is what msgs count against a slot's share, as the engine counts fetched
// records.
func recordsSize(msgs []record.Message) int64 {
	var n int64
	for i := range msgs {
		n += group.RecordSize(&msgs[i])
	}
	return n
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
// other topic when both arrived in one batch: across topics, records are handled in event
// time order.
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

// rangeReader reads committed input records again (admin.Scan on the processor's
// brokers), in offset order per partition.
type rangeReader func(ctx context.Context, ranges []admin.Range) ([]record.Message, error)

// catchUp makes the state effects a previous owner of the slot left owed. In
// exactly-once mode a batch's effects are made after the transaction that commits its
// outputs and offsets, and a transaction commits only once the earlier ones' effects are
// made; an owner that stopped in between (a crash, a store out of reach) leaves the last
// committed transaction's records without their effects: the checkpoint reports less
// than the committed offset. The commit records the transaction's first input offset,
// so only the records from there (or from the checkpoint's offset, if later) to the
// committed offset are read again and handled as usual, their state effects made batch
// by batch and their outputs (already committed) discarded. Like a retried batch, this
// expects a handler whose effects follow from the state and the records.
func (pl *pipeline[K, V]) catchUp(committed []record.Offset, read rangeReader) error {
	spans := owedSpans(committed, pl.run.applied, pl.s.ID)
	if len(spans) == 0 {
		return nil
	}
	log := pl.run.log.With("partition", pl.s.ID)
	for _, sp := range spans {
		log.Info("processor: making the state effects of committed records a previous owner did not make", "topic", sp.Topic, "from", sp.From, "to", sp.To)
	}
	var all []record.Message
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(pl.run.wait, time.Minute)
		var err error
		all, err = read(ctx, spans)
		cancel()
		if err == nil {
			break
		}
		if pl.run.wait.Err() != nil {
			return errAbandoned
		}
		if attempt >= 4 {
			return fmt.Errorf("processor: reading the committed records whose state effects are owed: %w", err)
		}
		log.Warn("processor: reading committed records again failed, retrying", "attempt", attempt+1, "err", err)
		if !(Backoff{}).Sleep(pl.run.wait, attempt) {
			return errAbandoned
		}
	}
	if len(spans) > 1 {
		all = mergeByTimestamp(all) // co-partitioned inputs, as the batcher orders them
	}
	made := 0
	for len(all) > 0 {
		n := min(len(all), pl.batch.size)
		chunk := all[:n]
		all = all[n:]
		effects := new(effect.Batch)
		outs, err := pl.run.handle(effect.NewContext(pl.run.ctx, effects), chunk)
		if err != nil {
			return err
		}
		pl.run.recycle(outs) // committed with the transaction that handled them first
		f := &flight{inputs: chunk, effects: effects}
		if err := pl.makeEffects(f); err != nil {
			return err
		}
		made += n
	}
	for _, sp := range spans {
		pl.run.applied[sp.Topic] = max(pl.run.applied[sp.Topic], sp.To)
	}
	log.Info("processor: owed state effects made", "records", made)
	return nil
}

// readOwed reads committed records of the processor's inputs (see catchUp).
func (p *Processor[K, V]) readOwed(ctx context.Context, ranges []admin.Range) ([]record.Message, error) {
	var out []record.Message
	err := admin.Scan(ctx, p.cfg.Brokers, mergeMaps(p.cfg.Overrides, p.cfg.ConsumerOverrides), ranges, func(m record.Message) error {
		out = append(out, m)
		return nil
	})
	return out, err
}
