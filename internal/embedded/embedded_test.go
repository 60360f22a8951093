package embedded

import (
	"context"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConfluentRoundTrip: confluent-kafka-go produces to and consumes from the embedded
// broker, and a group commit is read back.
func TestConfluentRoundTrip(t *testing.T) {
	b, err := Start(Topic{Name: "in", Partitions: 3})
	require.NoError(t, err)
	defer b.Close()

	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": b.Bootstrap(), "enable.idempotence": true, "log_level": 3})
	require.NoError(t, err)
	defer p.Close()
	topic := "in"
	const n = 300
	dr := make(chan kafka.Event, n)
	for i := range n {
		require.NoError(t, p.Produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(i % 3)},
			Value:          []byte{byte(i)},
		}, dr))
	}
	for range n {
		select {
		case ev := <-dr:
			require.NoError(t, ev.(*kafka.Message).TopicPartition.Error)
		case <-time.After(30 * time.Second):
			t.Fatal("no delivery report within 30s")
		}
	}

	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers": b.Bootstrap(), "group.id": "g", "auto.offset.reset": "earliest",
		"enable.auto.commit": false, "log_level": 3,
	})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Subscribe(topic, nil))
	got := 0
	deadline := time.Now().Add(30 * time.Second)
	for got < n && time.Now().Before(deadline) {
		if m, ok := c.Poll(100).(*kafka.Message); ok && m.TopicPartition.Error == nil {
			got++
		}
	}
	require.Equal(t, n, got)
	_, err = c.Commit()
	require.NoError(t, err)
	committed, err := c.Committed([]kafka.TopicPartition{{Topic: &topic, Partition: 0}}, 10_000)
	require.NoError(t, err)
	assert.Equal(t, kafka.Offset(n/3), committed[0].Offset)
}

func TestStartRejectsBadTopic(t *testing.T) {
	_, err := Start(Topic{Name: "x", Partitions: 0})
	require.ErrorContains(t, err, `topic "x" with 0 partitions`)
}

func TestBrokersFromEnv(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "")
	addr, isEmbedded, stop, err := BrokersFromEnv(context.Background(), Topic{Name: "t", Partitions: 1})
	require.NoError(t, err)
	defer stop()
	assert.True(t, isEmbedded)
	assert.NotEmpty(t, addr)

	t.Setenv("KAFKA_BROKERS", "127.0.0.1:1")
	addr, isEmbedded, stop2, err := BrokersFromEnv(context.Background())
	require.NoError(t, err)
	stop2()
	assert.False(t, isEmbedded)
	assert.Equal(t, "127.0.0.1:1", addr)
}
