package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
)

// TestProcessorProtocols runs two instances of one processor under each group protocol
// on the real broker, one instance leaving mid-way: every input is handled and the
// committed offsets reach the end offsets. With two co-partitioned inputs (eager/range and
// KIP-848 with the range assignor) every batch holds only its own partition number, and
// each partition's handler sees both topics.
func TestProcessorProtocols(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	cases := []struct {
		protocol processor.Protocol
		inputs   int
		static   bool
	}{
		{processor.Cooperative, 1, false},
		{processor.Cooperative, 1, true},
		{processor.Eager, 1, false},
		{processor.Consumer, 1, false},
		{processor.Eager, 2, false},
		{processor.Consumer, 2, false},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("%s/inputs=%d/static=%v", tc.protocol, tc.inputs, tc.static)
		t.Run(name, func(t *testing.T) {
			runProtocolCase(t, brokers, tc.protocol, tc.inputs, tc.static)
		})
	}
}

func runProtocolCase(t *testing.T, brokers string, protocol processor.Protocol, nInputs int, static bool) {
	const partitions, perTopic = 4, 2000
	group := stack.UniqueName("proto")
	var topics []string
	var inputs []processor.Input[int64, int64]
	for i := range nInputs {
		topic := stack.UniqueName(fmt.Sprintf("proto-in%d", i))
		harness.CreateTopic(t, brokers, topic, partitions, 1)
		topics = append(topics, topic)
		inputs = append(inputs, processor.Input[int64, int64]{Topic: topic, Key: codec.Int64(), Value: codec.Int64()})
	}
	outTopic := stack.UniqueName("proto-out")
	harness.CreateTopic(t, brokers, outTopic, partitions, 1)
	out := processor.NewOutput(outTopic, codec.Int64(), codec.Int64())

	var mu sync.Mutex
	handled := map[string]bool{}                         // topic/offset/partition
	topicsSeen := map[string]map[int32]map[string]bool{} // instance -> partition -> topics
	var misplaced []string
	factory := func(instance string) processor.Factory[int64, int64] {
		return func(partition int32) processor.Handler[int64, int64] {
			return processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
				mu.Lock()
				defer mu.Unlock()
				if topicsSeen[instance] == nil {
					topicsSeen[instance] = map[int32]map[string]bool{}
				}
				if topicsSeen[instance][partition] == nil {
					topicsSeen[instance][partition] = map[string]bool{}
				}
				for _, r := range b.Records {
					if r.Partition != partition || b.Partition != partition {
						misplaced = append(misplaced, fmt.Sprintf("%s[%d] in handler of %d", r.Topic, r.Partition, partition))
					}
					topicsSeen[instance][partition][r.Topic] = true
					handled[fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)] = true
					if err := out.Send(b, r.Key, r.Value); err != nil {
						return err
					}
				}
				return nil
			})
		}
	}
	start := func(instance string) (stop func() error) {
		cfg := processor.Config{Membership: processor.Membership{Brokers: brokers, Protocol: protocol, SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond}, Group: group, BatchSize: 200, BatchWait: 10 * time.Millisecond}
		if static {
			cfg.InstanceID = group + "-" + instance
		}
		p, err := processor.NewPartitioned(cfg, inputs, factory(instance))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- p.Run(ctx) }()
		return func() error {
			cancel()
			select {
			case err := <-errc:
				return err
			case <-time.After(60 * time.Second):
				return fmt.Errorf("instance %s did not stop within 60s", instance)
			}
		}
	}
	stopA := start("a")
	stopB := start("b")
	stoppedA := false
	defer func() {
		if !stoppedA {
			stopA()
		}
		stopB()
	}()

	produceRecords(t, brokers, topics, partitions, perTopic/2)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) >= nInputs*perTopic/4
	}, 90*time.Second, 50*time.Millisecond, "first quarter never handled")
	require.NoError(t, stopA(), "instance a's clean stop")
	stoppedA = true
	produceRecords(t, brokers, topics, partitions, perTopic/2)

	for _, topic := range topics {
		want := harness.EndOffsets(t, brokers, topic, partitions)
		require.Eventually(t, func() bool {
			got := harness.CommittedOffsets(t, brokers, group, topic, partitions)
			for p, end := range want {
				if got[p] != end {
					return false
				}
			}
			return true
		}, 90*time.Second, 200*time.Millisecond, "committed offsets of %s never reached the end offsets %v", topic, want)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, handled, nInputs*perTopic, "distinct inputs handled")
	assert.Empty(t, misplaced, "records handed to another partition's handler")
	if nInputs > 1 {
		// Partition p of both inputs reached handlers of partition p (which instance saw
		// what depends on fetch timing when an instance stops early).
		union := map[int32]map[string]bool{}
		for _, parts := range topicsSeen {
			for p, seen := range parts {
				if union[p] == nil {
					union[p] = map[string]bool{}
				}
				for topic := range seen {
					union[p][topic] = true
				}
			}
		}
		assert.Len(t, union, partitions)
		for p, seen := range union {
			assert.Len(t, seen, nInputs, "partition %d's handlers saw only %v", p, seen)
		}
	}
}

// produceRecords writes n records to each topic: key and value the big-endian index,
// partition index mod partitions.
func produceRecords(t *testing.T, brokers string, topics []string, partitions, n int) {
	t.Helper()
	var msgs []*kafka.Message
	for _, topic := range topics {
		for i := range n {
			b := binary.BigEndian.AppendUint64(nil, uint64(i))
			msgs = append(msgs, &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(i % partitions)}, Key: b, Value: b})
		}
	}
	harness.ProduceMessages(t, brokers, msgs)
}
