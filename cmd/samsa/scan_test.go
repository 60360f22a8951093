package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/record"
)

// TestScanPassesTransactionMarkers: the scan behind status -distributed and dlq sees the
// committed records of a topic written in transactions only, and a range ending on a
// marker or an aborted record finishes (by position) instead of waiting for a record
// that will never come.
func TestScanPassesTransactionMarkers(t *testing.T) {
	brokers, _ := realStack(t)
	topic := stack.UniqueName("scan-txn")
	createTopic(t, brokers, topic, 1)
	writeTransactions(t, brokers, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp := record.TopicPartition{Topic: topic, Partition: 0}
	require.EqualValues(t, 8, endOffsets(t, brokers, topic)[tp])
	scan := func(from, to int64) []string {
		got := []string{}
		require.NoError(t, admin.Scan(ctx, brokers, nil, []admin.Range{{TopicPartition: tp, From: from, To: to}}, func(m record.Message) error {
			v, err := codec.Int64().Decode(m.Value)
			require.NoError(t, err)
			got = append(got, fmt.Sprintf("%d@%d", v, m.Offset))
			return nil
		}))
		return got
	}
	assert.Equal(t, []string{"1@0", "2@1", "3@2", "4@6"}, scan(0, 8))
	assert.Equal(t, []string{"3@2"}, scan(2, 6), "ends on an aborted record and a marker")
	assert.Equal(t, []string{}, scan(5, 5))
}
