// Package record is the byte-level record the internal engine moves: the group engine
// hands these to partition workers and the producer takes them. Public packages convert
// them to their typed records at the edge; confluent-kafka-go's types never leave
// internal/.
package record

import "time"

// Header is one Kafka record header. Keys may repeat; order is kept.
type Header struct {
	Key   string
	Value []byte
}

// Message is one Kafka record. A nil Value is a tombstone (null on the wire); an empty
// non-nil Value is an empty value.
type Message struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time
}

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Offset is a position to commit: the offset of the next record to read.
type Offset struct {
	TopicPartition
	Offset int64
	// Metadata is committed with the offset ("" for none).
	Metadata string
}

// Pointers returns a pointer to each of msgs, in order: the form the producer takes.
func Pointers(msgs []Message) []*Message {
	ptrs := make([]*Message, len(msgs))
	for i := range msgs {
		ptrs[i] = &msgs[i]
	}
	return ptrs
}
