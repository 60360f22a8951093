package processor

import (
	"time"

	"github.com/samsa-go/samsa/internal/record"
)

// Header is a Kafka record header. Keys may repeat; order is kept.
type Header struct {
	Key   string
	Value []byte
}

// Record is one decoded input record.
type Record[K, V any] struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       K
	Value     V
	// NullKey reports that the key was null on the wire; Key is then the zero K and the
	// key decoder was not called.
	NullKey bool
	// Tombstone reports that the value was null on the wire (a delete, on a compacted
	// topic); Value is then the zero V and the value decoder was not called. An empty but
	// non-null value is not a tombstone.
	Tombstone bool
	Headers   []Header
	Timestamp time.Time
}

// Message is a record as bytes, as it is on the wire: what a Step takes as input and
// gives as output. A nil Key or Value is null. An output's Partition is -1 (the producer
// partitions it by its key) and its Offset 0 (it has none before it is produced).
type Message struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time
}

func toRecordHeaders(hs []Header) []record.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]record.Header, len(hs))
	for i, h := range hs {
		out[i] = record.Header(h)
	}
	return out
}

func fromRecordHeaders(hs []record.Header) []Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]Header, len(hs))
	for i, h := range hs {
		out[i] = Header(h)
	}
	return out
}
