package events_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/codec/registry"
	"github.com/samsa-go/samsa/examples/events/internal/events"
	"github.com/samsa-go/samsa/internal/testwait"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

type ping struct {
	N int64 `avro:"n"`
}

func pingSchema(name string) string {
	return `{"type":"record","name":"` + name + `","fields":[{"name":"meta","type":` + events.MetaSchema +
		`},{"name":"payload","type":{"type":"record","name":"` + name + `.Payload","fields":[{"name":"n","type":"long"}]}}]}`
}

// On the embedded broker and the in-memory registry: with AllErrorEvents a handler that
// panics answers with an error event; an event nobody handles here is skipped; a
// handler opted out of error events (none exist per handler once AllErrorEvents is set,
// so a second service) fails through the processor's policy, to the dead-letter topic
// with stage "handle".
func TestDispatchErrorEventsAndPolicy(t *testing.T) {
	b := samsatest.NewBroker(t, samsatest.Topic{Name: "ev", Partitions: 1}, samsatest.Topic{Name: "dlq", Partitions: 1})
	client, err := registry.NewClient(registry.Config{URL: "mock://events-test"})
	require.NoError(t, err)
	defer client.Close()
	for _, name := range []string{"ping", "pong", "other"} {
		_, err := client.Register(name, registry.Schema{Type: "AVRO", Text: pingSchema(name)})
		require.NoError(t, err)
	}

	produce := func(name string, n int64) {
		enc, err := events.Encoder[ping](client, "ev", name)
		require.NoError(t, err)
		v, err := enc.Encode(events.Event[ping]{Payload: ping{N: n}})
		require.NoError(t, err)
		p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": b.Addr(), "log_level": 3})
		require.NoError(t, err)
		defer p.Close()
		topic := "ev"
		dr := make(chan kafka.Event, 1)
		require.NoError(t, p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: 0}, Key: []byte(name), Value: v}, dr))
		require.NoError(t, (<-dr).(*kafka.Message).TopicPartition.Error)
	}
	produce("ping", 1)  // handled
	produce("ping", 13) // panics: error event
	produce("other", 2) // no handler: skipped
	produce("pong", 3)  // fails in the second service, which has no error events

	var mu sync.Mutex
	var pings []int64
	svc := events.NewService(client, "ev", nil, events.AllErrorEvents())
	require.NoError(t, events.Handle(svc, "ping", func(_ context.Context, e events.Event[ping]) error {
		if e.Payload.N == 13 {
			panic("unlucky")
		}
		mu.Lock()
		pings = append(pings, e.Payload.N)
		mu.Unlock()
		return nil
	}))
	assert.ErrorContains(t, events.Handle(svc, "ping", func(context.Context, events.Event[ping]) error { return nil }), "already registered")
	require.NoError(t, svc.RegisterErrorSchemas())
	runUntil(t, b.Addr(), "g1", svc, 4)
	assert.Equal(t, []int64{1}, pings)

	strict := events.NewService(client, "ev", nil)
	require.NoError(t, events.Handle(strict, "pong", func(context.Context, events.Event[ping]) error {
		return errors.New("pong refused")
	}))
	runUntil(t, b.Addr(), "g2", strict, 5) // the four, and the error event

	recs := readAll(t, b.Addr(), "ev", 5)
	name, err := svc.Name(recs[4].Value)
	require.NoError(t, err)
	assert.Equal(t, "event.error.ping", name)
	e, err := events.DecodeError(client, "ev", recs[4].Value)
	require.NoError(t, err)
	assert.Equal(t, "handler panicked: unlucky", e.Payload.Error)
	assert.Equal(t, recs[1].Value, e.Payload.Original)

	dlq := readAll(t, b.Addr(), "dlq", 1)
	h := map[string]string{}
	for _, x := range dlq[0].Headers {
		h[x.Key] = string(x.Value)
	}
	assert.Equal(t, "handle", h[processor.HeaderStage])
	assert.Contains(t, h[processor.HeaderError], "pong refused")
	assert.Equal(t, recs[3].Value, dlq[0].Value)
}

func runUntil(t *testing.T, brokers, group string, svc *events.Service, committed int64) {
	t.Helper()
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: group, BatchWait: 5 * time.Millisecond, ErrorPolicy: processor.DeadLetter("dlq")},
		[]processor.Input[string, events.Incoming]{{Topic: "ev", Key: codec.String(), Value: svc.Decoder()}},
		svc.Handler())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": group, "log_level": 3})
	require.NoError(t, err)
	defer c.Close()
	topic := "ev"
	var runErr error
	returned := false
	testwait.For(t, 60*time.Second, fmt.Sprintf("group %s commits offset %d, or Run returns", group, committed), func() bool {
		select {
		case runErr = <-errc:
			returned = true
			return true
		default:
		}
		res, err := c.Committed([]kafka.TopicPartition{{Topic: &topic, Partition: 0}}, 5000)
		return err == nil && int64(res[0].Offset) >= committed
	})
	cancel()
	if !returned {
		runErr = <-errc
	}
	require.NoError(t, runErr)
	res, err := c.Committed([]kafka.TopicPartition{{Topic: &topic, Partition: 0}}, 5000)
	require.NoError(t, err)
	require.GreaterOrEqual(t, int64(res[0].Offset), committed, "group %s committed", group)
}

func readAll(t *testing.T, brokers, topic string, n int) []*kafka.Message {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": "reader-" + topic + time.Now().String(),
		"auto.offset.reset": "earliest", "enable.auto.commit": false, "log_level": 3})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Assign([]kafka.TopicPartition{{Topic: &topic, Partition: 0, Offset: kafka.OffsetBeginning}}))
	var out []*kafka.Message
	deadline := time.Now().Add(20 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		if m, ok := c.Poll(100).(*kafka.Message); ok && m.TopicPartition.Error == nil {
			out = append(out, m)
		}
	}
	require.Len(t, out, n, "records of %s", topic)
	return out
}
