package admin

import (
	"context"
	"errors"
	"fmt"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/record"
)

// ErrReaderClosed is returned by Reader.ReadAt after Close.
var ErrReaderClosed = errors.New("admin: reader closed")

// Reader reads single records by offset through one consumer in assign mode (no group),
// created at the first read and kept until Close, for a caller that reads now and then
// and should not start a client each time. It is safe for concurrent use:
// reads take turns, and one waiting for its turn gives up when its context ends.
type Reader struct {
	cm   *kafka.ConfigMap
	turn chan struct{} // holds the token while a read or Close runs
	c    *kafka.Consumer
	done bool
}

// NewReader returns a reader of the cluster at brokers; it connects nothing until the
// first read.
func NewReader(brokers string, overrides kconf.Map) *Reader {
	cm := kconf.Build(kconf.Map{"log_level": 3}, overrides, kconf.Map{
		"bootstrap.servers": brokers, "group.id": "samsa-reader", "enable.auto.commit": false,
		"fetch.wait.max.ms": 10, "isolation.level": "read_uncommitted",
		// A record that is gone (retention) or not yet written fails the read at once.
		"auto.offset.reset": "error",
	})
	for k := range *cm {
		switch k {
		case "group.id", "enable.auto.commit", "fetch.wait.max.ms", "isolation.level", "auto.offset.reset":
		default:
			if !connectionKey(k) {
				delete(*cm, k)
			}
		}
	}
	return &Reader{cm: cm, turn: make(chan struct{}, 1)}
}

// ReadAt returns the record at offset of topic's partition, waiting at most until ctx
// ends.
func (r *Reader) ReadAt(ctx context.Context, topic string, partition int32, offset int64) (record.Message, error) {
	select {
	case r.turn <- struct{}{}:
	case <-ctx.Done():
		return record.Message{}, fmt.Errorf("admin: read %s[%d]@%d: %w", topic, partition, offset, ctx.Err())
	}
	defer func() { <-r.turn }()
	if r.done {
		return record.Message{}, ErrReaderClosed
	}
	if r.c == nil {
		c, err := kafka.NewConsumer(r.cm)
		if err != nil {
			return record.Message{}, fmt.Errorf("admin: reader: %w", err)
		}
		r.c = c
	}
	if err := r.c.Assign([]kafka.TopicPartition{{Topic: &topic, Partition: partition, Offset: kafka.Offset(offset)}}); err != nil {
		return record.Message{}, fmt.Errorf("admin: reader: %w", err)
	}
	defer r.c.Unassign() // an idle reader fetches nothing
	for ctx.Err() == nil {
		switch e := r.c.Poll(50).(type) {
		case *kafka.Message:
			tp := e.TopicPartition
			if tp.Topic == nil || *tp.Topic != topic || tp.Partition != partition {
				continue
			}
			if tp.Error != nil {
				return record.Message{}, fmt.Errorf("admin: read %s[%d]@%d: %w", topic, partition, offset, tp.Error)
			}
			if int64(tp.Offset) != offset {
				continue
			}
			out := record.Message{Topic: topic, Partition: partition, Offset: offset, Key: e.Key, Value: e.Value, Timestamp: e.Timestamp}
			for _, h := range e.Headers {
				out.Headers = append(out.Headers, record.Header{Key: h.Key, Value: h.Value})
			}
			return out, nil
		case kafka.Error:
			if e.Code() == kafka.ErrAutoOffsetReset || e.IsFatal() {
				return record.Message{}, fmt.Errorf("admin: read %s[%d]@%d: %w", topic, partition, offset, e)
			}
		}
	}
	return record.Message{}, fmt.Errorf("admin: read %s[%d]@%d: %w", topic, partition, offset, ctx.Err())
}

// Close waits for a read in progress and closes the consumer. Further reads fail with
// ErrReaderClosed. It is idempotent.
func (r *Reader) Close() {
	r.turn <- struct{}{}
	defer func() { <-r.turn }()
	if r.c != nil && !r.done {
		r.c.Close()
	}
	r.done = true
}
