package processor_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/testwait"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

// Key-ordered concurrency across rebalances: two instances at Concurrency 1000 over 8
// partitions and 10k keys, one of them stopped and started twice meanwhile. Every key's
// outputs are its inputs, in order, once: nothing lost, and a clean hand-over (a revoked
// partition drains its units and commits) redoes nothing. 1M records on the Kafka named
// by KAFKA_BROKERS (make test), 100k on the in-process broker.
func TestConcurrencyOrderAcrossRebalances(t *testing.T) {
	suffix := fmt.Sprint(time.Now().UnixNano())
	in, outTopic := "conc-in-"+suffix, "conc-out-"+suffix
	brokers, embedded, stop, err := samsatest.BrokersFromEnv(t.Context(),
		samsatest.Topic{Name: in, Partitions: 8}, samsatest.Topic{Name: outTopic, Partitions: 8})
	require.NoError(t, err)
	t.Cleanup(stop)
	n := 1_000_000
	if embedded || testing.Short() {
		n = 100_000
	}
	const keys = 10_000
	want := map[string]int64{} // per key, the records produced
	produce := func(records int) { produceSeq(t, brokers, in, 8, keys, records, want) }
	out := processor.NewOutput(outTopic, codec.String(), codec.Int64())

	var mu sync.Mutex
	next := map[string]int64{} // per key, the next sequence number its handler expects
	var redone, skipped int
	h := processor.HandlerFunc[string, int64](func(ctx context.Context, b *processor.Batch[string, int64]) error {
		if rand.IntN(20) == 0 {
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		}
		mu.Lock()
		for _, r := range b.Records {
			switch want := next[r.Key]; {
			case r.Value < want:
				redone++
			case r.Value > want:
				skipped++
			}
			next[r.Key] = r.Value + 1
		}
		mu.Unlock()
		for _, r := range b.Records {
			if err := out.Send(b, r.Key, r.Value); err != nil {
				return err
			}
		}
		return nil
	})
	group := "conc-" + suffix
	var handledMu sync.Mutex
	handled := map[string]int{} // records per instance
	start := func(name string) (stop func() error) {
		counted := processor.HandlerFunc[string, int64](func(ctx context.Context, b *processor.Batch[string, int64]) error {
			handledMu.Lock()
			handled[name] += len(b.Records)
			handledMu.Unlock()
			return h(ctx, b)
		})
		p, err := processor.New(processor.Config{
			Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second},
			Group:      group, Concurrency: 1000, CommitInterval: 200 * time.Millisecond},
			[]processor.Input[string, int64]{{Topic: in, Key: codec.String(), Value: codec.Int64()}}, counted)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- p.Run(ctx) }()
		t.Logf("%s started", name)
		return func() error {
			cancel()
			select {
			case err := <-errc:
				return err
			case <-time.After(60 * time.Second):
				return errors.New(name + " did not stop within 60 s")
			}
		}
	}
	admin, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	require.NoError(t, err)
	defer admin.Close()
	// shared waits until the group has members members, each holding partitions.
	shared := func(members int) {
		testwait.For(t, time.Minute, fmt.Sprintf("%d members sharing the partitions", members), func() bool {
			res, err := admin.DescribeConsumerGroups(t.Context(), []string{group})
			if err != nil || len(res.ConsumerGroupDescriptions) != 1 {
				return false
			}
			d := res.ConsumerGroupDescriptions[0]
			if len(d.Members) != members {
				return false
			}
			for _, m := range d.Members {
				if len(m.Assignment.TopicPartitions) == 0 {
					return false
				}
			}
			return true
		})
	}
	quarter := n / 4
	// The input arrives in quarters, each once the members it is meant for share the
	// partitions, so each instance certainly handles some of it.
	produce(quarter)
	stopA := start("a")
	shared(1)
	stopB := start("b")
	shared(2)
	produce(quarter)
	require.NoError(t, stopB()) // b's partitions go back to a, drained and committed by b
	shared(1)
	produce(quarter)
	stopB = start("b again")
	shared(2)
	produce(n - 3*quarter)
	end := endOffsets(t, brokers, in, 8)
	testwait.For(t, 5*time.Minute, "every record committed", func() bool { return equalOffsets(committed(t, brokers, group, in, 8), end) })
	require.NoError(t, stopB())
	require.NoError(t, stopA())

	handledMu.Lock()
	t.Logf("records handled per instance: %v", handled)
	assert.Positive(t, handled["b"], "b took partitions over")
	assert.Positive(t, handled["b again"], "b took partitions over again")
	handledMu.Unlock()
	mu.Lock()
	assert.Zero(t, skipped, "a key's records reached the handler with a gap")
	assert.Zero(t, redone, "records handled again after clean hand-overs")
	mu.Unlock()

	got := map[string]int64{}
	bad := 0
	for _, m := range consumeAll(t, brokers, outTopic, n, 3*time.Minute) {
		k := string(m.Key)
		v, err := codec.Int64().Decode(m.Value)
		require.NoError(t, err)
		if v != got[k] {
			if bad++; bad <= 5 {
				t.Errorf("key %s: output %d, want %d", k, v, got[k])
			}
		}
		got[k] = v + 1
	}
	assert.Zero(t, bad, "outputs out of order, repeated or missing")
	assert.Equal(t, len(want), len(got), "keys with outputs")
	missing := 0
	for k, c := range want {
		if got[k] != c {
			missing++
		}
	}
	assert.Zero(t, missing, "keys whose outputs stop short of their inputs")
	t.Logf("%d records over %d keys, %d partitions, two instances, four rebalances: order kept, none lost, none redone", n, len(want), 8)
}

// produceSeq writes n records over keys to topic's partitions (a key always to the same
// one), each record's value its sequence number within its key: next[key], which it
// counts up.
func produceSeq(t *testing.T, brokers, topic string, partitions, keys, n int, next map[string]int64) {
	t.Helper()
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3, "linger.ms": 20,
		"enable.idempotence": true, "queue.buffering.max.messages": 200000})
	require.NoError(t, err)
	defer p.Close()
	var failed error
	acked := make(chan int, 1)
	go func() {
		count := 0
		for ev := range p.Events() {
			if m, ok := ev.(*kafka.Message); ok {
				if m.TopicPartition.Error != nil && failed == nil {
					failed = m.TopicPartition.Error
				}
				if count++; count == n {
					acked <- count
					return
				}
			}
		}
	}()
	for range n {
		k := fmt.Sprintf("key-%05d", rand.IntN(keys))
		v, _ := codec.Int64().Encode(next[k])
		next[k]++
		h := fnv.New32a()
		h.Write([]byte(k))
		msg := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(h.Sum32() % uint32(partitions))}, Key: []byte(k), Value: v}
		for {
			err := p.Produce(msg, nil)
			if err == nil {
				break
			}
			var kerr kafka.Error
			require.True(t, errors.As(err, &kerr) && kerr.Code() == kafka.ErrQueueFull, "produce: %v", err)
			time.Sleep(5 * time.Millisecond)
		}
	}
	select {
	case <-acked:
	case <-time.After(3 * time.Minute):
		t.Fatal("the input was not acknowledged within 3 minutes")
	}
	require.NoError(t, failed)
}
