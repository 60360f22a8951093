package processor

import (
	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/record"
)

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

// Encoders returns the output's key encoder (nil: null keys) and value encoder.
func (o Output[K, V]) Encoders() (codec.Encoder[K], codec.Encoder[V]) { return o.key, o.value }

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
	v, err := o.encodeValue(value)
	if err != nil {
		return err
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
	v, err := o.encodeValue(value)
	if err != nil {
		return err
	}
	return o.enqueue(s, nil, v, headers)
}

// encodeValue encodes a value that is not a tombstone: an encoder's nil is an empty
// value (tombstones go through SendTombstone).
func (o Output[K, V]) encodeValue(value V) ([]byte, error) {
	if o.value == nil {
		return nil, &Error{Topic: o.topic, Partition: -1, Offset: -1, Stage: StageEncode, Err: errNoEncoder}
	}
	v, err := o.value.Encode(value)
	if err != nil {
		return nil, &Error{Topic: o.topic, Partition: -1, Offset: -1, Stage: StageEncode, Err: err}
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
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
