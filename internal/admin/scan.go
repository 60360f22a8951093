package admin

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/record"
)

// Range is the records [From, To) of one partition.
type Range struct {
	record.TopicPartition
	From, To int64
}

// Scan reads every record of ranges, in offset order per partition, and calls fn with
// each (on the caller's goroutine) until every range is read, fn fails or ctx ends. It
// reads through one consumer in assign mode (no group: nothing is committed) with
// read_committed isolation, so aborted records and transaction markers are passed over; a
// range whose end is a marker or a compacted-away record still finishes, by position.
func Scan(ctx context.Context, brokers string, overrides kconf.Map, ranges []Range, fn func(m record.Message) error) error {
	var assign []kafka.TopicPartition
	end := map[record.TopicPartition]int64{}
	for i := range ranges {
		r := ranges[i]
		if r.From >= r.To {
			continue
		}
		assign = append(assign, kafka.TopicPartition{Topic: &ranges[i].Topic, Partition: r.Partition, Offset: kafka.Offset(r.From)})
		end[r.TopicPartition] = r.To
	}
	if len(assign) == 0 {
		return nil
	}
	cm := kconf.Build(kconf.Map{"log_level": 3}, overrides, kconf.Map{
		"bootstrap.servers": brokers, "group.id": "samsa-scan", "enable.auto.commit": false,
		"enable.auto.offset.store": false, "fetch.wait.max.ms": 10, "isolation.level": "read_committed",
		"auto.offset.reset": "error", "go.logs.channel.enable": true,
	})
	for k := range *cm {
		switch k {
		case "group.id", "enable.auto.commit", "enable.auto.offset.store", "fetch.wait.max.ms", "isolation.level", "auto.offset.reset", "go.logs.channel.enable":
		default:
			if !connectionKey(k) {
				delete(*cm, k)
			}
		}
	}
	c, err := kafka.NewConsumer(cm)
	if err != nil {
		return fmt.Errorf("admin: scan: %w", err)
	}
	// librdkafka's log lines go nowhere: a scan's failures are its returned error.
	logs := make(chan struct{})
	go func() {
		defer close(logs)
		kconf.ForwardLogs(slog.New(slog.DiscardHandler), c.Logs())
	}()
	defer func() {
		c.Close()
		<-logs
	}()
	if err := c.Assign(assign); err != nil {
		return fmt.Errorf("admin: scan: %w", err)
	}
	idle := 0
	for len(end) > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("admin: scan: %d partitions unfinished: %w", len(end), err)
		}
		switch e := c.Poll(100).(type) {
		case *kafka.Message:
			idle = 0
			tp := record.TopicPartition{Topic: *e.TopicPartition.Topic, Partition: e.TopicPartition.Partition}
			to, ok := end[tp]
			if !ok {
				continue
			}
			if e.TopicPartition.Error != nil {
				return fmt.Errorf("admin: scan %s[%d]: %w", tp.Topic, tp.Partition, e.TopicPartition.Error)
			}
			off := int64(e.TopicPartition.Offset)
			if off < to {
				m := record.Message{Topic: tp.Topic, Partition: tp.Partition, Offset: off, Key: e.Key, Value: e.Value, Timestamp: e.Timestamp}
				for _, h := range e.Headers {
					m.Headers = append(m.Headers, record.Header{Key: h.Key, Value: h.Value})
				}
				if err := fn(m); err != nil {
					return err
				}
			}
			if off+1 >= to {
				delete(end, tp)
				if err := c.IncrementalUnassign([]kafka.TopicPartition{e.TopicPartition}); err != nil {
					return fmt.Errorf("admin: scan: %w", err)
				}
			}
		case kafka.Error:
			if e.Code() == kafka.ErrAutoOffsetReset || e.IsFatal() {
				return fmt.Errorf("admin: scan: %w", e)
			}
		case nil:
			// Nothing came: partitions whose position passed their end through markers or
			// compaction are finished.
			if idle++; idle%5 != 0 {
				continue
			}
			var tps []kafka.TopicPartition
			for tp := range end {
				tps = append(tps, kafka.TopicPartition{Topic: &tp.Topic, Partition: tp.Partition})
			}
			pos, err := c.Position(tps)
			if err != nil {
				continue
			}
			for _, p := range pos {
				tp := record.TopicPartition{Topic: *p.Topic, Partition: p.Partition}
				if p.Offset >= 0 && int64(p.Offset) >= end[tp] {
					delete(end, tp)
				}
			}
		}
	}
	return nil
}
