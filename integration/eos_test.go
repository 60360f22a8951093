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

// TestExactlyOnceHandOff: exactly-once mode on the real broker, two instances, one
// closed and one added mid-run while records flow: a read_committed reader sees every
// input's output exactly once, and the group's offsets reach the end.
func TestExactlyOnceHandOff(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	const partitions, n = 4, 20_000
	in, out := stack.UniqueName("eos-in"), stack.UniqueName("eos-out")
	harness.CreateTopic(t, brokers, in, partitions, 1)
	harness.CreateTopic(t, brokers, out, partitions, 1)
	group := stack.UniqueName("eos")
	output := processor.NewOutput(out, codec.Int64(), codec.Int64())
	start := func(name string) (stop func() error) {
		p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond}, Group: group, ExactlyOnce: true, BatchSize: 200, BatchWait: 5 * time.Millisecond, CommitInterval: 100 * time.Millisecond},
			[]processor.Input[int64, int64]{{Topic: in, Key: codec.Int64(), Value: codec.Int64()}},
			copyHandler(output))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- p.Run(ctx) }()
		var once sync.Once
		var rerr error
		stop = func() error {
			once.Do(func() {
				cancel()
				select {
				case rerr = <-errc:
				case <-time.After(60 * time.Second):
					rerr = fmt.Errorf("instance %s did not stop", name)
				}
			})
			return rerr
		}
		t.Cleanup(func() { stop() })
		return stop
	}

	stopA := start("a")
	stopB := start("b")
	go func() { // records flow while the group changes
		p, err := harness.NewProducer(brokers)
		if err != nil {
			t.Error(err)
			return
		}
		defer p.Close()
		dr := make(chan kafka.Event, n)
		for i := range n {
			v := binary.BigEndian.AppendUint64(nil, uint64(i))
			for p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &in, Partition: int32(i % partitions)}, Key: v, Value: v}, dr) != nil {
				time.Sleep(time.Millisecond)
			}
			if i%1000 == 999 {
				time.Sleep(100 * time.Millisecond)
			}
		}
		for range n {
			if m := (<-dr).(*kafka.Message); m.TopicPartition.Error != nil {
				t.Errorf("produce input: %v", m.TopicPartition.Error)
			}
		}
	}()
	time.Sleep(time.Second)
	require.NoError(t, stopA(), "clean close of a")
	stopC := start("c")
	time.Sleep(time.Second)
	require.NoError(t, stopB(), "clean close of b")

	require.Eventually(t, func() bool {
		ends := harness.EndOffsets(t, brokers, in, partitions)
		total := int64(0)
		for _, e := range ends {
			total += e
		}
		if total < n {
			return false
		}
		got := harness.CommittedOffsets(t, brokers, group, in, partitions)
		for p, e := range ends {
			if got[p] != e {
				return false
			}
		}
		return true
	}, 3*time.Minute, 500*time.Millisecond, "committed offsets never reached the end")
	require.NoError(t, stopC())

	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": stack.UniqueName("eos-reader"),
		"auto.offset.reset": "earliest", "isolation.level": "read_committed", "enable.auto.commit": false, "log_level": 3})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Subscribe(out, nil))
	seen := make(map[uint64]int, n)
	total := 0
	idle := time.Now()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline) && (len(seen) < n || time.Since(idle) < 2*time.Second); {
		if m, ok := c.Poll(100).(*kafka.Message); ok && m.TopicPartition.Error == nil {
			seen[binary.BigEndian.Uint64(m.Value)]++
			total++
			idle = time.Now()
		}
	}
	dups := total - len(seen)
	t.Logf("exactly-once hand-off: inputs=%d outputs(read_committed)=%d distinct=%d dups=%d", n, total, len(seen), dups)
	assert.Len(t, seen, n, "every input has its output")
	assert.Zero(t, dups, "no output twice under read_committed")
}
