package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
)

// These tests check the test environment itself with a raw confluent-kafka-go client:
// the real broker keeps what it acknowledged, and a cooperative group hands partitions
// over without losing records or committed offsets. The framework's own tests stand on it.

const (
	foundationRecords    = 10_000
	foundationPartitions = 8
)

// TestGroupNoLossWhenMemberLeaves: 10,000 records to 8 partitions, a cooperative-sticky
// group of two consumers, one leaves mid-way: all records arrive and the committed
// offsets equal the end offsets.
func TestGroupNoLossWhenMemberLeaves(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	runGroupScenario(t, brokers, 1, nil)
}

// TestGroupNoLossWithBrokerHardKilled: the same on a three-node cluster (replication 3,
// min.insync.replicas 2) while one broker is SIGKILLed and restarted mid-run: every
// acknowledged record is consumed.
func TestGroupNoLossWithBrokerHardKilled(t *testing.T) {
	harness.RequireReal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	k, err := stack.StartKafka(ctx, stack.KafkaOptions{Brokers: 3})
	require.NoError(t, err)
	t.Cleanup(func() { k.Close() })
	t.Logf("3-node cluster ready in %s", time.Since(start).Round(time.Millisecond))

	var once sync.Once
	faultDone := make(chan error, 1)
	runGroupScenario(t, k.Bootstrap(), 3, func(consumed int) {
		if consumed < foundationRecords/5 {
			return
		}
		once.Do(func() {
			go func() {
				// Node 2 leads some of the 8 partitions (leaders spread over the nodes),
				// so producers and fetchers must fail over and come back.
				t0 := time.Now()
				if err := k.KillBroker(2); err != nil {
					faultDone <- fmt.Errorf("kill broker 2: %w", err)
					return
				}
				time.Sleep(3 * time.Second)
				if err := k.StartBroker(ctx, 2); err != nil {
					faultDone <- fmt.Errorf("restart broker 2: %w", err)
					return
				}
				t.Logf("broker 2 killed and back in %s", time.Since(t0).Round(time.Millisecond))
				faultDone <- nil
			}()
		})
	})
	select {
	case err := <-faultDone:
		require.NoError(t, err, "the broker fault")
	case <-ctx.Done():
		t.Fatal("the broker fault never ran or never finished")
	}
}

// runGroupScenario produces foundationRecords keyed records while two consumers of one
// group consume them; the first consumer leaves after a third is consumed. onProgress is
// called from the consumers with the number of distinct records seen so far.
func runGroupScenario(t *testing.T, brokers string, rf int, onProgress func(consumed int)) {
	topic := stack.UniqueName("foundation")
	group := stack.UniqueName("foundation-group")
	harness.CreateTopic(t, brokers, topic, foundationPartitions, rf)

	var (
		mu   sync.Mutex
		seen = make(map[string]bool, foundationRecords)
	)
	consume := func(c *kafka.Consumer, stop <-chan struct{}, errs chan<- error) {
		for {
			select {
			case <-stop:
				errs <- nil
				return
			default:
			}
			switch ev := c.Poll(100).(type) {
			case *kafka.Message:
				if ev.TopicPartition.Error != nil {
					continue
				}
				mu.Lock()
				seen[string(ev.Key)] = true
				n := len(seen)
				mu.Unlock()
				// Stored only after "processing"; ErrState means the partition moved away.
				if _, err := c.StoreMessage(ev); err != nil && !isState(err) {
					errs <- err
					return
				}
				if onProgress != nil {
					onProgress(n)
				}
			case kafka.Error:
				if ev.IsFatal() {
					errs <- ev
					return
				}
			}
		}
	}
	newConsumer := func() *kafka.Consumer {
		c, err := kafka.NewConsumer(&kafka.ConfigMap{
			"bootstrap.servers":             brokers,
			"group.id":                      group,
			"partition.assignment.strategy": "cooperative-sticky",
			"auto.offset.reset":             "earliest",
			"enable.auto.offset.store":      false,
			"enable.auto.commit":            true,
			"auto.commit.interval.ms":       200,
			"session.timeout.ms":            6000,
			"log_level":                     3,
		})
		require.NoError(t, err)
		require.NoError(t, c.Subscribe(topic, nil))
		return c
	}

	a, b := newConsumer(), newConsumer()
	stopA, stopB := make(chan struct{}), make(chan struct{})
	errsA, errsB := make(chan error, 1), make(chan error, 1)
	go consume(a, stopA, errsA)
	go consume(b, stopB, errsB)
	aClosed := false
	t.Cleanup(func() {
		if !aClosed {
			close(stopA)
			<-errsA
			a.Close()
		}
	})

	p, err := harness.NewProducer(brokers)
	require.NoError(t, err)
	defer p.Close()
	deliveries := make(chan kafka.Event, foundationRecords)
	var produced atomic.Int64
	go func() {
		for i := range foundationRecords {
			k := []byte(key(i))
			for {
				err := p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny}, Key: k, Value: k}, deliveries)
				if err == nil {
					break
				}
				// The local queue is full while a broker is down: wait and retry.
				p.Flush(100)
			}
			produced.Add(1)
			if i%100 == 99 {
				time.Sleep(50 * time.Millisecond) // spread the run so the faults land mid-way
			}
		}
	}()
	// The first consumer leaves once a third of the records are in, while records still flow.
	leftA := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			mu.Lock()
			n := len(seen)
			mu.Unlock()
			if n >= foundationRecords/3 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("first consumer leaves after %d records were produced", produced.Load())
		close(stopA)
		if err := <-errsA; err != nil {
			leftA <- err
			return
		}
		leftA <- a.Close()
	}()
	acked, failed := harness.DrainDeliveries(t, deliveries, foundationRecords, 3*time.Minute)
	assert.Zero(t, failed, "failed deliveries")
	require.Len(t, acked, foundationRecords, "acknowledged records")
	require.NoError(t, <-leftA, "first consumer's leave")
	aClosed = true

	// The second consumer takes over every partition and sees every acknowledged record.
	ok := assert.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= len(acked)
	}, 3*time.Minute, 100*time.Millisecond)
	close(stopB)
	require.NoError(t, <-errsB)
	mu.Lock()
	var missing []string
	for k := range acked {
		if !seen[k] {
			missing = append(missing, k)
		}
	}
	mu.Unlock()
	require.True(t, ok && len(missing) == 0, "%d acknowledged records never consumed (first: %v)", len(missing), first(missing, 5))

	if _, err := b.Commit(); err != nil && !isNoOffset(err) {
		require.NoError(t, err)
	}
	require.NoError(t, b.Close())
	assert.Equal(t, harness.EndOffsets(t, brokers, topic, foundationPartitions),
		harness.CommittedOffsets(t, brokers, group, topic, foundationPartitions),
		"committed offsets must equal end offsets")
}

func isState(err error) bool {
	var kerr kafka.Error
	return errors.As(err, &kerr) && kerr.Code() == kafka.ErrState
}

func isNoOffset(err error) bool {
	var kerr kafka.Error
	return errors.As(err, &kerr) && kerr.Code() == kafka.ErrNoOffset
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
