package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// admin creates the run's topics and deletes them again on close.
type admin struct {
	brokers string
	ac      *kafka.AdminClient
	created []string
}

func newAdmin(brokers string) (*admin, error) {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	if err != nil {
		return nil, fmt.Errorf("admin client for %s: %w", brokers, err)
	}
	return &admin{brokers: brokers, ac: ac}, nil
}

func (a *admin) close() {
	if len(a.created) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := a.ac.DeleteTopics(ctx, a.created); err != nil {
			fmt.Fprintf(os.Stderr, "membench: delete topics %v: %v\n", a.created, err)
		}
		cancel()
	}
	a.ac.Close()
}

// createTopic creates name and waits until every partition has a leader.
func (a *admin) createTopic(ctx context.Context, name string, partitions int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := a.ac.CreateTopics(ctx, []kafka.TopicSpecification{{Topic: name, NumPartitions: partitions, ReplicationFactor: 1}})
	if err == nil && res[0].Error.Code() != kafka.ErrNoError {
		err = res[0].Error
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	a.created = append(a.created, name)
	for {
		if md, err := a.ac.GetMetadata(&name, false, 2000); err == nil {
			tm, ok := md.Topics[name]
			ready := ok && len(tm.Partitions) == partitions
			for _, p := range tm.Partitions {
				ready = ready && p.Leader >= 0
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s has no leaders: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// key is keySize bytes.
func key(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }

// preload writes records records round-robin over the partitions of topic with a producer
// tuned for bulk loading, and waits for every delivery report.
func (a *admin) preload(ctx context.Context, topic string, partitions, records, valueSize int) (time.Duration, error) {
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers":            a.brokers,
		"linger.ms":                    50,
		"batch.size":                   1 << 20,
		"queue.buffering.max.messages": 1000000,
		"queue.buffering.max.kbytes":   1 << 20,
		"acks":                         1,
		"go.delivery.report.fields":    "none",
		"log_level":                    3,
	})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	var failed int
	var firstErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; n < records; {
			ev, ok := <-p.Events()
			if !ok {
				return
			}
			if m, isMsg := ev.(*kafka.Message); isMsg {
				n++
				if m.TopicPartition.Error != nil {
					if failed++; firstErr == nil {
						firstErr = m.TopicPartition.Error
					}
				}
			}
		}
	}()
	start := time.Now()
	value := make([]byte, valueSize)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	for i := range records {
		m := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(i % partitions)}, Key: key(i), Value: value}
		for {
			err := p.Produce(m, nil)
			if err == nil {
				break
			}
			var kerr kafka.Error
			if !errors.As(err, &kerr) || kerr.Code() != kafka.ErrQueueFull {
				return 0, fmt.Errorf("preload: %w", err)
			}
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			time.Sleep(time.Millisecond)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(5 * time.Minute):
		return 0, errors.New("preload: delivery reports timed out")
	}
	if failed > 0 {
		return 0, fmt.Errorf("preload: %d records failed: %w", failed, firstErr)
	}
	return time.Since(start), nil
}
