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

// TestProcessorNoDuplicatesWithoutFault: one processor, no rebalance, no failure, many
// partitions and a buffer small enough that its partitions are paused and resumed over
// and over (the default buffer: a 1 MiB share per partition): every input reaches the handler exactly once and appears once in the output.
// librdkafka can return a record a second time after a pause that raced with the poll
// that returned it; the output then had a duplicate (2-8 per million records at 64
// partitions with the default buffer) although nothing failed.
//
//	no-dup: partitions=… records=… handled-twice=… output-dups=…
func TestProcessorNoDuplicatesWithoutFault(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	const (
		partitions = 64
		perPart    = 8000
		records    = partitions * perPart
	)
	in, out, group := stack.UniqueName("nodup-in"), stack.UniqueName("nodup-out"), stack.UniqueName("nodup")
	harness.CreateTopic(t, brokers, in, partitions, 1)
	harness.CreateTopic(t, brokers, out, partitions, 1)
	preload(t, brokers, in, partitions, records)

	var mu sync.Mutex
	seen := make(map[[2]int64]int, records)
	twice := 0
	output := processor.NewOutput(out, codec.Bytes(), codec.Bytes())
	p, err := processor.New(processor.Config{
		Membership: processor.Membership{Brokers: brokers}, Group: group, CommitInterval: 100 * time.Millisecond,
	}, []processor.Input[[]byte, []byte]{{Topic: in, Key: codec.Bytes(), Value: codec.Bytes()}},
		processor.HandlerFunc[[]byte, []byte](func(_ context.Context, b *processor.Batch[[]byte, []byte]) error {
			mu.Lock()
			for _, r := range b.Records {
				k := [2]int64{int64(r.Partition), r.Offset}
				seen[k]++
				if seen[k] == 2 {
					twice++
				}
			}
			mu.Unlock()
			return sendAll(b, output)
		}))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	ends := harness.EndOffsets(t, brokers, in, partitions)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		committed := harness.CommittedOffsets(t, brokers, group, in, partitions)
		all := true
		for part, end := range ends {
			if committed[part] < end {
				all = false
			}
		}
		if all {
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("Run returned before committing everything: %v", err)
		default:
		}
		require.True(t, time.Now().Before(deadline), "not committed within 3 minutes")
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("Run did not return within a minute of cancel")
	}

	outs := harness.ReadTopic(t, brokers, out, partitions, time.Minute)
	copies := map[string]int{}
	dups := 0
	for _, r := range outs {
		k := string(r.Key) + "/" + string(r.Value)
		copies[k]++
		if copies[k] == 2 {
			dups++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("no-dup: partitions=%d records=%d handled-twice=%d output-dups=%d", partitions, records, twice, dups)
	assert.Len(t, seen, records, "every input handled")
	assert.Zero(t, twice, "inputs handled twice without a fault")
	assert.Len(t, copies, records, "every input in the output")
	assert.Zero(t, dups, "outputs written twice without a fault")
	if t.Failed() {
		for k, n := range seen {
			if n > 1 {
				t.Log(fmt.Sprintf("partition %d offset %d handled %d times", k[0], k[1], n))
			}
		}
	}
}

// preload writes n records to topic, round-robin over its partitions, key and value the
// record's number (8 bytes, big-endian; the value padded to 100 bytes).
func preload(t *testing.T, brokers, topic string, partitions, n int) {
	t.Helper()
	msgs := make([]*kafka.Message, n)
	for i := range msgs {
		k := binary.BigEndian.AppendUint64(nil, uint64(i))
		msgs[i] = &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(i % partitions)}, Key: k, Value: append(k, make([]byte, 92)...)}
	}
	harness.ProduceMessages(t, brokers, msgs)
}
