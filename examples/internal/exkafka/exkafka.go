// Package exkafka is the examples' plumbing around the framework: it picks the broker
// (KAFKA_BROKERS, else an embedded one), creates the example's topics, and plays the
// outside producer and reader with a plain confluent-kafka-go client. Nothing here is
// needed to write a processor.
package exkafka

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/internal/embedded"
)

// Topic is a topic the example needs.
type Topic struct {
	Name       string
	Partitions int
}

// Setup returns the brokers to use: $KAFKA_BROKERS (creating the topics there when
// missing), else an in-process broker with the topics. stop releases it.
func Setup(ctx context.Context, topics ...Topic) (brokers string, stop func(), err error) {
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		if err := createTopics(ctx, env, topics); err != nil {
			return "", nil, err
		}
		return env, func() {}, nil
	}
	et := make([]embedded.Topic, len(topics))
	for i, t := range topics {
		et[i] = embedded.Topic{Name: t.Name, Partitions: int32(t.Partitions)}
	}
	b, err := embedded.Start(et...)
	if err != nil {
		return "", nil, err
	}
	return b.Bootstrap(), b.Close, nil
}

func createTopics(ctx context.Context, brokers string, topics []Topic) error {
	if len(topics) == 0 {
		return nil // confluent-kafka-go v2.15's CreateTopics panics on an empty list
	}
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	if err != nil {
		return err
	}
	defer ac.Close()
	specs := make([]kafka.TopicSpecification, len(topics))
	for i, t := range topics {
		specs[i] = kafka.TopicSpecification{Topic: t.Name, NumPartitions: t.Partitions, ReplicationFactor: -1}
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := ac.CreateTopics(cctx, specs)
	if err != nil {
		return fmt.Errorf("create topics on %s: %w", brokers, err)
	}
	var errs []error
	for _, r := range res {
		if c := r.Error.Code(); c != kafka.ErrNoError && c != kafka.ErrTopicAlreadyExists {
			errs = append(errs, fmt.Errorf("create topic %s: %w", r.Topic, r.Error))
		}
	}
	return errors.Join(errs...)
}

// Producer is the outside world writing to the example's input topics.
type Producer struct {
	p  *kafka.Producer
	dr chan kafka.Event
	n  int
}

// NewProducer connects an idempotent producer.
func NewProducer(brokers string) (*Producer, error) {
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "enable.idempotence": true, "partitioner": "murmur2_random", "log_level": 3})
	if err != nil {
		return nil, err
	}
	return &Producer{p: p, dr: make(chan kafka.Event, 100_000)}, nil
}

// Send queues one record (partitioned by key).
func (p *Producer) Send(topic string, key, value []byte) error {
	p.n++
	return p.p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny}, Key: key, Value: value}, p.dr)
}

// Wait waits for every queued record's acknowledgement.
func (p *Producer) Wait(ctx context.Context) error {
	for ; p.n > 0; p.n-- {
		select {
		case ev := <-p.dr:
			if m, ok := ev.(*kafka.Message); ok && m.TopicPartition.Error != nil {
				return m.TopicPartition.Error
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close closes the producer.
func (p *Producer) Close() { p.p.Close() }

// Record is what Read returns.
type Record struct {
	Partition int32
	Key       []byte
	Value     []byte
}

// Read reads topic from the beginning until fn returns false or ctx is done.
func Read(ctx context.Context, brokers, topic string, fn func(Record) bool) error {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": fmt.Sprintf("example-reader-%d", time.Now().UnixNano()),
		"auto.offset.reset": "earliest", "enable.auto.commit": false, "log_level": 3})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Subscribe(topic, nil); err != nil {
		return err
	}
	for ctx.Err() == nil {
		if m, ok := c.Poll(100).(*kafka.Message); ok && m.TopicPartition.Error == nil {
			if !fn(Record{Partition: m.TopicPartition.Partition, Key: m.Key, Value: m.Value}) {
				return nil
			}
		}
	}
	return ctx.Err()
}
