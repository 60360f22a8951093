package integration

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/stack"
)

func TestMain(m *testing.M) { os.Exit(stack.RunTests(m)) }

// requireReal skips a real-stack test in -short mode, saying why; otherwise the test runs
// (and fails if the stack cannot start): CI never skips these.
func requireReal(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("short mode: this test runs against a real Kafka (started from the Maven Central jars, or $KAFKA_BROKERS)")
	}
}

func newAdmin(t *testing.T, brokers string) *kafka.AdminClient {
	t.Helper()
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	require.NoError(t, err)
	t.Cleanup(ac.Close)
	return ac
}

// createTopic creates a topic with the given partitions and replication factor and waits
// until every partition has a leader.
func createTopic(t *testing.T, brokers, name string, partitions, rf int) {
	t.Helper()
	createTopicConfig(t, brokers, name, partitions, rf, nil)
}

// createTopicConfig is createTopic with topic configuration (nil: the broker's defaults).
func createTopicConfig(t *testing.T, brokers, name string, partitions, rf int, config map[string]string) {
	t.Helper()
	ac := newAdmin(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := ac.CreateTopics(ctx, []kafka.TopicSpecification{{Topic: name, NumPartitions: partitions, ReplicationFactor: rf, Config: config}})
	require.NoError(t, err)
	require.Equal(t, kafka.ErrNoError, res[0].Error.Code(), "create topic %s: %v", name, res[0].Error)
	require.Eventually(t, func() bool {
		md, err := ac.GetMetadata(&name, false, 2000)
		if err != nil {
			return false
		}
		tm, ok := md.Topics[name]
		if !ok || len(tm.Partitions) != partitions {
			return false
		}
		for _, p := range tm.Partitions {
			if p.Leader < 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "topic %s never got leaders for all partitions", name)
}

// endOffsets returns the high watermark of each partition of topic.
func endOffsets(t *testing.T, brokers, topic string, partitions int) map[int32]int64 {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": stack.UniqueName("probe"), "log_level": 3})
	require.NoError(t, err)
	defer c.Close()
	ends := make(map[int32]int64, partitions)
	for p := range int32(partitions) {
		// Retried: right after a broker restart the leader may still be moving.
		var err error
		require.Eventually(t, func() bool {
			var high int64
			_, high, err = c.QueryWatermarkOffsets(topic, p, 5000)
			ends[p] = high
			return err == nil
		}, 30*time.Second, 200*time.Millisecond, "end offset of %s[%d]: %v", topic, p, err)
	}
	return ends
}

// committedOffsets returns the group's committed offset for each partition of topic
// (kafka.OffsetInvalid, -1001, where nothing is committed). It reads through a consumer
// of the group that never joins it (rd_kafka_committed), not the AdminClient's
// ListConsumerGroupOffsets, which crashes the process with SIGSEGV when the broker
// answers NOT_COORDINATOR, as a freshly started broker does (librdkafka #5040, seen with
// confluent-kafka-go v2.15.0). Retried while the coordinator loads.
func committedOffsets(t *testing.T, brokers, group, topic string, partitions int) map[int32]int64 {
	t.Helper()
	out, err := fetchCommitted(brokers, group, topic, partitions)
	for attempt := 0; err != nil && attempt < 20; attempt++ {
		time.Sleep(250 * time.Millisecond)
		out, err = fetchCommitted(brokers, group, topic, partitions)
	}
	require.NoError(t, err, "committed offsets of group %s on %s", group, topic)
	return out
}

// newTestProducer is the producer tests write their input with: idempotent (acks=all), so
// a broker retry never duplicates an input record, with a short linger and quiet logs.
func newTestProducer(brokers string) (*kafka.Producer, error) {
	return kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "enable.idempotence": true,
		"acks": "all", "linger.ms": 5, "log_level": 3})
}

func fetchCommitted(brokers, group, topic string, partitions int) (map[int32]int64, error) {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": false, "log_level": 3})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	tps := make([]kafka.TopicPartition, partitions)
	for p := range partitions {
		tps[p] = kafka.TopicPartition{Topic: &topic, Partition: int32(p)}
	}
	res, err := c.Committed(tps, 10_000)
	if err != nil {
		return nil, err
	}
	out := make(map[int32]int64, partitions)
	for _, tp := range res {
		if tp.Error != nil {
			return nil, tp.Error
		}
		out[tp.Partition] = int64(tp.Offset)
	}
	return out, nil
}

// drainDeliveries waits for n delivery reports on ch and returns the keys acknowledged
// and the number of failures.
func drainDeliveries(t *testing.T, ch <-chan kafka.Event, n int, timeout time.Duration) (acked map[string]bool, failed int) {
	t.Helper()
	acked = make(map[string]bool, n)
	deadline := time.After(timeout)
	for i := 0; i < n; i++ {
		select {
		case ev := <-ch:
			m, ok := ev.(*kafka.Message)
			if !ok {
				i--
				continue
			}
			if m.TopicPartition.Error != nil {
				failed++
				continue
			}
			acked[string(m.Key)] = true
		case <-deadline:
			t.Fatalf("only %d of %d delivery reports after %s", i, n, timeout)
		}
	}
	return acked, failed
}

func key(i int) string { return fmt.Sprintf("k%06d", i) }
