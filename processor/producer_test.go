package processor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/processor"
)

// A producer to a cluster nobody answers for fails in NewProducer, within its
// StartTimeout, naming the address, instead of holding records for the delivery timeout.
func TestProducerUnreachableFailsAtStart(t *testing.T) {
	out := processor.NewOutput("orders", codec.String(), codec.String())
	start := time.Now()
	p, err := processor.NewProducer(processor.ProducerConfig{Brokers: "127.0.0.1:1", StartTimeout: 2 * time.Second}, out)
	took := time.Since(start)
	t.Logf("NewProducer failed after %s: %v", took.Round(time.Millisecond), err)
	require.Error(t, err)
	assert.Nil(t, p)
	assert.Contains(t, err.Error(), "127.0.0.1:1", "the error names the address")
	assert.Less(t, took, 10*time.Second, "bounded by StartTimeout")
}

// A producer to a topic that does not exist fails in NewProducer naming the topic.
func TestProducerMissingTopicFailsAtStart(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "orders", Partitions: 1})
	_, err := processor.NewProducer(processor.ProducerConfig{Brokers: brokers, StartTimeout: 5 * time.Second},
		processor.NewOutput("totals", codec.String(), codec.String()))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"totals"`)
	assert.Contains(t, err.Error(), "does not exist")

	_, err = processor.NewProducer(processor.ProducerConfig{Brokers: brokers, StartTimeout: -time.Second, DeliveryTimeout: -time.Second},
		processor.NewOutput("orders", codec.String(), codec.String()))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "StartTimeout = -1s, must not be negative")
	assert.Contains(t, err.Error(), "DeliveryTimeout = -1s, must not be negative")
}

// Once the broker is gone, SendMany returns when its context ends, and without a
// deadline of its own, within DeliveryTimeout, naming the record and the topic.
func TestProducerSendBoundedWhenBrokerGone(t *testing.T) {
	b, err := embedded.Start(embedded.Topic{Name: "orders", Partitions: 1})
	require.NoError(t, err)
	p, err := processor.NewProducer(processor.ProducerConfig{Brokers: b.Bootstrap(), DeliveryTimeout: 2 * time.Second},
		processor.NewOutput("orders", codec.String(), codec.String()))
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Send(context.Background(), "k", "first"))
	b.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Send(ctx, "k", "second")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 2*time.Second, "returns when its context ends")

	start = time.Now()
	err = p.SendMany(context.Background(), []processor.ProducerRecord[string, string]{{Key: "k", Value: "third"}})
	took := time.Since(start)
	t.Logf("SendMany failed after %s: %v", took.Round(time.Millisecond), err)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `record 0 to "orders"`)
	assert.Less(t, took, 15*time.Second, "bounded by DeliveryTimeout")
}
