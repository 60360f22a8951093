package processor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/record"
)

// Recorder is implemented by a Checkpoint that knows, without I/O, the offsets this
// process has applied through it (state.Table does). The processor then records that
// offset with each commit (as the commit's metadata), and when a partition is assigned
// it compares the checkpoint's Applied with what the last commit recorded: a store that
// reports less than it once held has lost writes (a Redis restarted without
// persistence), and resuming on it would silently drop the effects of every record
// between the two. Run fails instead, with an error wrapping ErrCheckpointBehind.
type Recorder interface {
	// Recorded returns the offset after the last record of topic's partition this
	// process applied (or found applied) through the checkpoint; ok is false when it
	// knows none.
	Recorded(topic string, partition int32) (next int64, ok bool)
}

// ErrCheckpointBehind is wrapped by the error Run returns when, at assignment, a
// checkpoint reports fewer records applied than the group's last commit recorded it had:
// the store lost writes, or is a new one (an in-memory table in a new process). Rebuild
// its state before running again (reset the group to the earliest offsets and clear the
// table, or replay into a new table), or, to accept the loss, commit the group's offsets
// without metadata (samsa reset). The error says so.
var ErrCheckpointBehind = errors.New("checkpoint is behind what the group's commits recorded")

// appliedPrefix marks the commit metadata a processor with a Recorder writes.
const appliedPrefix = "samsa:applied="

// withApplied adds to next, per topic, the offset the recorder knows applied.
func withApplied(rec Recorder, next []record.Offset) {
	for i := range next {
		if n, ok := rec.Recorded(next[i].Topic, next[i].Partition); ok {
			next[i].Metadata = appliedPrefix + strconv.FormatInt(n, 10)
		}
	}
}

// recordedApplied parses commit metadata written by withApplied.
func recordedApplied(md string) (int64, bool) {
	v, ok := strings.CutPrefix(md, appliedPrefix)
	if !ok {
		return 0, false
	}
	v, _, _ = strings.Cut(v, fromSep)
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// recordedFrom parses the first input offset of the transaction an exactly-once
// commit's metadata records (see fromSep), if any.
func recordedFrom(md string) (int64, bool) {
	_, v, ok := strings.Cut(md, fromSep)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// checkBehind compares the applied offsets a checkpoint reported with those the group's
// commits recorded, and fails naming every partition whose store went back.
func checkBehind(applied map[string]int64, committed []record.Offset, slot int32) error {
	var errs []error
	for _, c := range committed {
		rec, ok := recordedApplied(c.Metadata)
		if !ok {
			continue // committed without a recorder (or by another tool): nothing to compare
		}
		if a := applied[c.Topic]; a < rec {
			errs = append(errs, fmt.Errorf("%s[%d]: the checkpoint reports offset %d applied, but the group's commit at offset %d recorded %d: the effects of records %d..%d are gone",
				c.Topic, slot, a, c.Offset, rec, a, rec-1))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("processor: %w: %w\n"+
		"The store lost writes (a Redis without persistence), or is not the one the group ran on: an in-memory table (state.NewMemoryTable) starts empty in every process, so a group whose commits outlive the process needs a Redis table (state.NewTable). "+
		"To rebuild the state, stop every instance and reset the group to the earliest offsets, clearing the table (samsa reset -group GROUP -topic TOPIC -to-earliest -redis ADDR -table-namespace NS -clear-table --execute); "+
		"to go on without the lost effects, reset the group to its current offsets (samsa reset), which commits them without the recorded applied offsets", ErrCheckpointBehind, errors.Join(errs...))
}

// committedOf is how the runner reads a slot's committed offsets (group.Slot.Committed).
type committedOf func(ctx context.Context) ([]record.Offset, error)

// owedSpans returns the records of partition slot whose effects are owed: committed by
// a checkpointed processor (its metadata) and not applied, from the committing
// transaction's first input offset on (see catchUp).
func owedSpans(committed []record.Offset, applied map[string]int64, slot int32) []admin.Range {
	var spans []admin.Range
	for _, c := range committed {
		if _, ok := recordedApplied(c.Metadata); !ok {
			continue // not committed by a checkpointed processor: nothing owed
		}
		from := applied[c.Topic]
		if f, ok := recordedFrom(c.Metadata); ok {
			from = max(from, f)
		}
		if from < c.Offset {
			spans = append(spans, admin.Range{TopicPartition: record.TopicPartition{Topic: c.Topic, Partition: slot}, From: from, To: c.Offset})
		}
	}
	return spans
}
