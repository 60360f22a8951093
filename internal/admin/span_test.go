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

// TestReadSpansReadsCommittedRecords: spans of two partitions written in transactions,
// one aborted, read back committed only; a span that ends at a transaction marker (no
// record to read at its end) ends too, and an empty span reads nothing.
func TestReadSpansReadsCommittedRecords(t *testing.T) {
	b, err := embedded.Start(embedded.Topic{Name: "t", Partitions: 2})
	require.NoError(t, err)
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": b.Bootstrap(), "transactional.id": "span-test",
		"go.delivery.reports": false, "log_level": 3})
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.InitTransactions(ctx))
	topic := "t"
	txn := func(commit bool, values ...string) {
		require.NoError(t, p.BeginTransaction())
		for _, v := range values {
			for part := range int32(2) {
				require.NoError(t, p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: part}, Value: []byte(v)}, nil))
			}
		}
		require.Zero(t, p.Flush(30_000))
		if commit {
			require.NoError(t, p.CommitTransaction(ctx))
		} else {
			require.NoError(t, p.AbortTransaction(ctx))
		}
	}
	txn(true, "a", "b") // offsets 0, 1; marker 2
	txn(false, "x")     // 3; marker 4
	txn(true, "c", "d") // 5, 6; marker 7
	lo, hi, err := queryEnds(b.Bootstrap(), topic)
	require.NoError(t, err)
	require.Equal(t, int64(0), lo)
	require.Equal(t, int64(8), hi, "three transactions of two, one and two records, each with its marker")

	got, err := ReadSpans(ctx, b.Bootstrap(), nil, []Span{
		{Topic: topic, Partition: 0, From: 0, To: 8},
		{Topic: topic, Partition: 1, From: 1, To: 6},
		{Topic: topic, Partition: 0, From: 5, To: 5}, // empty: not read, not a duplicate
	})
	require.NoError(t, err)
	values := func(i int) (out []string) {
		for _, m := range got[i] {
			out = append(out, string(m.Value))
		}
		return out
	}
	assert.Equal(t, []string{"a", "b", "c", "d"}, values(0), "committed records of partition 0, the span ending at a marker")
	assert.Equal(t, []string{"b", "c"}, values(1), "from offset 1 up to 6, the aborted record left out")
	assert.Empty(t, got[2])
	assert.Equal(t, int64(5), got[1][1].Offset)

	_, err = ReadSpans(ctx, b.Bootstrap(), nil, []Span{{Topic: topic, Partition: 0, From: 0, To: 2}, {Topic: topic, Partition: 0, From: 5, To: 7}})
	require.ErrorContains(t, err, "given twice")
}

// queryEnds returns partition 0's low and high watermarks.
func queryEnds(brokers, topic string) (lo, hi int64, err error) {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": "ends", "log_level": 3})
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	return c.QueryWatermarkOffsets(topic, 0, 10_000)
}
