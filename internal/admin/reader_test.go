package admin

import (
	"context"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/internal/embedded"
)

// TestReaderReadsByOffsetWithOneClient: one reader reads records of two partitions in
// any order, fails at once on an offset past the end, and refuses reads after Close.
func TestReaderReadsByOffsetWithOneClient(t *testing.T) {
	b, err := embedded.Start(embedded.Topic{Name: "t", Partitions: 2})
	require.NoError(t, err)
	defer b.Close()
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": b.Bootstrap(), "enable.idempotence": true, "log_level": 3})
	require.NoError(t, err)
	defer p.Close()
	topic := "t"
	dr := make(chan kafka.Event, 6)
	for part := range int32(2) {
		for i := range 3 {
			require.NoError(t, p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: part},
				Value: []byte{byte('a' + part), byte('0' + i)}, Headers: []kafka.Header{{Key: "i", Value: []byte{byte('0' + i)}}}}, dr))
		}
	}
	for range 6 {
		select {
		case ev := <-dr:
			require.NoError(t, ev.(*kafka.Message).TopicPartition.Error)
		case <-time.After(30 * time.Second):
			t.Fatal("no delivery report within 30s")
		}
	}

	r := NewReader(b.Bootstrap(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		part   int32
		offset int64
		want   string
	}{{1, 2, "b2"}, {0, 0, "a0"}, {0, 2, "a2"}, {1, 0, "b0"}, {0, 1, "a1"}} {
		m, err := r.ReadAt(ctx, topic, tc.part, tc.offset)
		require.NoError(t, err)
		assert.Equal(t, tc.want, string(m.Value))
		assert.Equal(t, tc.offset, m.Offset)
		require.Len(t, m.Headers, 1)
		assert.Equal(t, tc.want[1:], string(m.Headers[0].Value))
	}

	_, err = r.ReadAt(ctx, topic, 0, 10)
	require.Error(t, err, "an offset past the end")
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "it fails at once, not when the context ends")
	_, err = r.ReadAt(ctx, topic, 0, 1)
	assert.NoError(t, err, "the reader still works after a failed read")

	r.Close()
	r.Close()
	_, err = r.ReadAt(ctx, topic, 0, 0)
	assert.ErrorIs(t, err, ErrReaderClosed)
}
