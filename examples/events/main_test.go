package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec/registry"
	"github.com/samsa-go/samsa/examples/events/internal/events"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
)

func TestMain(m *testing.M) { os.Exit(stack.RunTests(m)) }

// TestEventsEndToEnd runs the example on real Kafka and the real registry: good events
// are handled by name, each refused shipment appears as event.error.order.shipped
// carrying the original event, and the record that is not an event is dead-lettered
// exactly once with the reason.
func TestEventsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: this test runs against a real Kafka and a real schema registry")
	}
	brokers := stack.KafkaBrokers(t)
	t.Setenv("KAFKA_BROKERS", brokers)
	url := stack.SchemaRegistryURL(t)
	topic := stack.UniqueName("events")
	var logs bytes.Buffer
	cfg := config{Topic: topic, DLQ: topic + ".dlq", Group: stack.UniqueName("events-service"), Orders: 30, Registry: url,
		Out: log.New(&logs, "", 0)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sum, err := run(ctx, cfg)
	require.NoError(t, err, "log:\n%s", &logs)
	t.Logf("log:\n%s", &logs)

	assert.Equal(t, 30, sum.Placed)
	assert.Equal(t, 27, sum.Shipped)
	require.Len(t, sum.ErrorEvents, 3)
	client, err := registry.NewClient(registry.Config{URL: url})
	require.NoError(t, err)
	defer client.Close()
	failed := map[string]bool{}
	for _, e := range sum.ErrorEvents {
		assert.Equal(t, "event.error.order.shipped", e.Meta.Name)
		assert.NotEmpty(t, e.Meta.CorrelationID)
		orig, err := events.Decode[OrderShipped](client, topic, e.Payload.Original)
		require.NoError(t, err, "the original event is carried whole")
		assert.Equal(t, "order.shipped", orig.Meta.Name)
		assert.Equal(t, "", orig.Payload.Carrier)
		assert.Equal(t, orig.Meta.CorrelationID, e.Meta.CorrelationID, "the error event continues the original's correlation")
		assert.Equal(t, fmt.Sprintf("order %s shipped without a carrier", orig.Payload.OrderID), e.Payload.Error)
		failed[orig.Payload.OrderID] = true
	}
	assert.Equal(t, map[string]bool{"o-0009": true, "o-0019": true, "o-0029": true}, failed)

	dlq := readAll(t, brokers, cfg.DLQ)
	require.Len(t, dlq, 1, "the poison record is dead-lettered once")
	h := map[string]string{}
	for _, x := range dlq[0].Headers {
		h[x.Key] = string(x.Value)
	}
	assert.Equal(t, `{"not":"an event"}`, string(dlq[0].Value))
	assert.Equal(t, "decode", h[processor.HeaderStage])
	assert.Equal(t, topic, h[processor.HeaderSourceTopic])
	assert.Contains(t, h[processor.HeaderError], "not a schema-registry framed event")
	assert.Contains(t, h[processor.HeaderError], "first byte 0x7b")
}

// TestEventsEmbedded runs the example with nothing set up, as `go run` does: the
// in-process broker and the in-memory registry.
func TestEventsEmbedded(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "")
	var logs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := run(ctx, config{Topic: "events", DLQ: "events.dlq", Group: "g", Orders: 10, Out: log.New(&logs, "", 0)})
	require.NoError(t, err, "log:\n%s", &logs)
	assert.Equal(t, 10, sum.Placed)
	assert.Equal(t, 9, sum.Shipped)
	assert.Len(t, sum.ErrorEvents, 1)
	assert.Equal(t, 1, sum.DeadLettered)
	assert.True(t, strings.Contains(logs.String(), "in-memory registry"))
}

// readAll reads topic from the beginning to its end offsets (bounded).
func readAll(t *testing.T, brokers, topic string) []*kafka.Message {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": stack.UniqueName("reader"),
		"auto.offset.reset": "earliest", "enable.auto.commit": false, "log_level": 3})
	require.NoError(t, err)
	defer c.Close()
	_, high, err := c.QueryWatermarkOffsets(topic, 0, 10_000)
	require.NoError(t, err)
	require.NoError(t, c.Assign([]kafka.TopicPartition{{Topic: &topic, Partition: 0, Offset: kafka.OffsetBeginning}}))
	var out []*kafka.Message
	deadline := time.Now().Add(30 * time.Second)
	for int64(len(out)) < high && time.Now().Before(deadline) {
		if m, ok := c.Poll(100).(*kafka.Message); ok && m.TopicPartition.Error == nil {
			out = append(out, m)
		}
	}
	require.Equal(t, high, int64(len(out)), "read %s to its end", topic)
	return out
}
