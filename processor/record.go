package processor

import (
	"errors"
	"time"

	"github.com/samsa-go/samsa/codec"
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

// Input declares one input topic and how to decode its keys and values. Several inputs of
// one processor must be co-partitioned; each may decode into K and V its own way (a V that
// is an interface lets topics of different shapes meet in one handler).
type Input[K, V any] struct {
	Topic string
	Key   codec.Decoder[K]
	Value codec.Decoder[V]
}

// Output is a typed output topic. Handlers send to any number of outputs of any types
// through the batch they are handling. Records are partitioned by the murmur2 hash of
// their key, like Kafka's Java clients, so keys land where a Java producer would put them.
type Output[K, V any] struct {
	topic string
	key   codec.Encoder[K]
	value codec.Encoder[V]
}

// NewOutput declares an output topic. A nil key encoder produces null keys.
func NewOutput[K, V any](topic string, key codec.Encoder[K], value codec.Encoder[V]) Output[K, V] {
	return Output[K, V]{topic: topic, key: key, value: value}
}

// Topic is the output's topic name.
func (o Output[K, V]) Topic() string { return o.topic }

// Sender collects a batch's outputs; *Batch implements it. Outputs are produced after the
// handler returns successfully, and the batch's input offsets are committed only once
// every output is acknowledged.
//
// Only the framework makes Senders: to test a handler without a broker, run it with
// samsatest.HandlerDriver, which returns what it sent. A Sender is not safe for
// concurrent use: send from the goroutine that runs the handler.
type Sender interface {
	enqueue(m record.Message) error
}

// Send encodes key and value and queues the record for production. It fails only when
// an encoder fails, the output was declared without a value encoder, or s is not a
// Batch the framework made (a hand-built one in a test).
func (o Output[K, V]) Send(s Sender, key K, value V, headers ...Header) error {
	if o.value == nil {
		return &Error{Topic: o.topic, Partition: -1, Offset: -1, Stage: StageEncode, Err: errNoEncoder}
	}
	v, err := o.value.Encode(value)
	if err != nil {
		return &Error{Topic: o.topic, Partition: -1, Offset: -1, Stage: StageEncode, Err: err}
	}
	if v == nil {
		v = []byte{} // an encoder's nil is an empty value; tombstones go through SendTombstone
	}
	return o.send(s, key, v, headers)
}

// SendTombstone queues a record with a null value (a delete on a compacted topic).
func (o Output[K, V]) SendTombstone(s Sender, key K, headers ...Header) error {
	return o.send(s, key, nil, headers)
}

// SendNullKey queues a record whose key is null on the wire, as a record read with
// Record.NullKey should be passed on: a key encoder such as codec.String turns the zero
// key into an empty key, which is not the same (the producer spreads null-keyed records
// over the partitions but hashes every empty key to one, and compaction treats them
// differently).
func (o Output[K, V]) SendNullKey(s Sender, value V, headers ...Header) error {
	if o.value == nil {
		return &Error{Topic: o.topic, Partition: -1, Offset: -1, Stage: StageEncode, Err: errNoEncoder}
	}
	v, err := o.value.Encode(value)
	if err != nil {
		return &Error{Topic: o.topic, Partition: -1, Offset: -1, Stage: StageEncode, Err: err}
	}
	if v == nil {
		v = []byte{}
	}
	return o.enqueue(s, nil, v, headers)
}

func (o Output[K, V]) send(s Sender, key K, value []byte, headers []Header) error {
	var k []byte
	if o.key != nil {
		var err error
		if k, err = o.key.Encode(key); err != nil {
			return &Error{Topic: o.topic, Partition: -1, Offset: -1, Stage: StageEncode, Err: err}
		}
	}
	return o.enqueue(s, k, value, headers) // a nil k (no key encoder, or it returned nil) is a null key
}

func (o Output[K, V]) enqueue(s Sender, key, value []byte, headers []Header) error {
	m := record.Message{Topic: o.topic, Partition: anyPartition, Key: key, Value: value, Headers: toRecordHeaders(headers)}
	if s == nil {
		return errForeignBatch
	}
	return s.enqueue(m)
}

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
