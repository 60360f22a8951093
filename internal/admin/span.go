package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/record"
)

// Span is the records of one partition from From up to, not including, To.
type Span struct {
	Topic     string
	Partition int32
	From, To  int64
}

// ReadSpans reads the committed records of every span (read_committed: records of
// aborted transactions are left out, as are transaction markers) through one consumer
// in assign mode, and returns them per span, in offset order. A span whose records are
// gone (retention) fails the read; so does ctx ending first.
func ReadSpans(ctx context.Context, brokers string, overrides kconf.Map, spans []Span) ([][]record.Message, error) {
	cm := kconf.Build(kconf.Map{"log_level": 3}, overrides, kconf.Map{
		"bootstrap.servers": brokers, "group.id": "samsa-span-reader", "enable.auto.commit": false,
		"enable.auto.offset.store": false, "fetch.wait.max.ms": 10, "isolation.level": "read_committed",
		"auto.offset.reset": "error",
	})
	for k := range *cm {
		switch k {
		case "group.id", "enable.auto.commit", "enable.auto.offset.store", "fetch.wait.max.ms", "isolation.level", "auto.offset.reset":
		default:
			if !connectionKey(k) {
				delete(*cm, k)
			}
		}
	}
	out := make([][]record.Message, len(spans))
	var assign []kafka.TopicPartition
	open := map[record.TopicPartition]int{} // span index by partition, while unfinished
	for i, s := range spans {
		if s.From >= s.To {
			continue
		}
		tp := record.TopicPartition{Topic: s.Topic, Partition: s.Partition}
		if _, dup := open[tp]; dup {
			return nil, fmt.Errorf("admin: read spans: %s[%d] given twice", s.Topic, s.Partition)
		}
		open[tp] = i
		assign = append(assign, kafka.TopicPartition{Topic: &spans[i].Topic, Partition: s.Partition, Offset: kafka.Offset(s.From)})
	}
	if len(open) == 0 {
		return out, nil
	}
	c, err := kafka.NewConsumer(cm)
	if err != nil {
		return nil, fmt.Errorf("admin: read spans: %w", err)
	}
	defer c.Close()
	if err := c.Assign(assign); err != nil {
		return nil, fmt.Errorf("admin: read spans: %w", err)
	}
	idle := time.Now()
	for len(open) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("admin: read spans: %d partitions unfinished: %w", len(open), err)
		}
		switch e := c.Poll(50).(type) {
		case *kafka.Message:
			tp := e.TopicPartition
			if tp.Topic == nil {
				continue
			}
			i, ok := open[record.TopicPartition{Topic: *tp.Topic, Partition: tp.Partition}]
			if !ok {
				continue
			}
			s := spans[i]
			if tp.Error != nil {
				return nil, fmt.Errorf("admin: read %s[%d] %d..%d: %w", s.Topic, s.Partition, s.From, s.To-1, tp.Error)
			}
			off := int64(tp.Offset)
			if off >= s.To {
				delete(open, record.TopicPartition{Topic: s.Topic, Partition: s.Partition})
				continue
			}
			if off < s.From {
				continue
			}
			m := record.Message{Topic: s.Topic, Partition: s.Partition, Offset: off, Key: e.Key, Value: e.Value, Timestamp: e.Timestamp}
			for _, h := range e.Headers {
				m.Headers = append(m.Headers, record.Header{Key: h.Key, Value: h.Value})
			}
			out[i] = append(out[i], m)
			if off == s.To-1 {
				delete(open, record.TopicPartition{Topic: s.Topic, Partition: s.Partition})
			}
			idle = time.Now()
		case kafka.Error:
			if e.Code() == kafka.ErrAutoOffsetReset || e.IsFatal() {
				return nil, fmt.Errorf("admin: read spans: %w", e)
			}
		case nil:
			// A span may end in records no read_committed consumer is given (a transaction's
			// marker, an aborted transaction's records): its position passes them.
			if time.Since(idle) < 100*time.Millisecond {
				continue
			}
			idle = time.Now()
			var tps []kafka.TopicPartition
			for tp := range open {
				tps = append(tps, kafka.TopicPartition{Topic: &tp.Topic, Partition: tp.Partition})
			}
			pos, err := c.Position(tps)
			if err != nil {
				continue
			}
			for _, p := range pos {
				if p.Topic != nil && p.Offset >= 0 {
					tp := record.TopicPartition{Topic: *p.Topic, Partition: p.Partition}
					if i, ok := open[tp]; ok && int64(p.Offset) >= spans[i].To {
						delete(open, tp)
					}
				}
			}
		}
	}
	return out, nil
}
