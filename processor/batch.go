package processor

import (
	"errors"

	"github.com/samsa-go/samsa/internal/record"
)

// Batch is up to Config.BatchSize records of one partition (of every co-partitioned
// input), in offset order per topic. It is valid only during the Handle call that
// receives it: its Records slice is reused for the partition's next batch, so keep
// copies of records (not pointers into the slice) beyond the call. A Batch is not safe
// for concurrent use: send from the handler's goroutine.
type Batch[K, V any] struct {
	// Partition is the partition number the batch comes from.
	Partition int32
	// Records are the decoded records. Records that failed to decode were handled by the
	// error policy and are not here.
	Records []Record[K, V]

	outs *[]record.Message
}

func (b *Batch[K, V]) enqueue(m record.Message) error {
	if b == nil || b.outs == nil {
		return errForeignBatch
	}
	*b.outs = append(*b.outs, m)
	return nil
}

var errForeignBatch = errors.New("processor: Send on a Batch the framework did not make (test handlers with samsatest.HandlerDriver)")

// NextOffsets returns, per input topic in the batch, the offset after its last record:
// what a checkpointed store records as applied together with the batch's effects.
func (b *Batch[K, V]) NextOffsets() map[string]int64 {
	next := make(map[string]int64, 1)
	for i := range b.Records {
		r := &b.Records[i]
		if r.Offset+1 > next[r.Topic] {
			next[r.Topic] = r.Offset + 1
		}
	}
	return next
}
