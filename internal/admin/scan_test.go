package admin

import (
	"context"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/internal/record"
)

// TestScanReadsCommittedRecords: ranges of two partitions written in transactions, one
// aborted, read back committed only; a range that ends at a transaction marker (no record
// to read at its end) ends too.
func TestScanReadsCommittedRecords(t *testing.T) {
	b, err := embedded.Start(embedded.Topic{Name: "t", Partitions: 2})
	require.NoError(t, err)
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": b.Bootstrap(), "transactional.id": "scan-test",
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

	got := map[record.TopicPartition][]string{}
	var offsets []int64
	err = Scan(ctx, b.Bootstrap(), nil, []Range{
		{TopicPartition: record.TopicPartition{Topic: topic, Partition: 0}, From: 0, To: 8},
		{TopicPartition: record.TopicPartition{Topic: topic, Partition: 1}, From: 1, To: 6},
	}, func(m record.Message) error {
		tp := record.TopicPartition{Topic: m.Topic, Partition: m.Partition}
		got[tp] = append(got[tp], string(m.Value))
		if m.Partition == 1 {
			offsets = append(offsets, m.Offset)
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "c", "d"}, got[record.TopicPartition{Topic: topic, Partition: 0}],
		"committed records of partition 0, the range ending at a marker")
	assert.Equal(t, []string{"b", "c"}, got[record.TopicPartition{Topic: topic, Partition: 1}],
		"from offset 1 up to 6, the aborted record left out")
	assert.Equal(t, []int64{1, 5}, offsets)
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
