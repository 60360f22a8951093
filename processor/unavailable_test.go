package processor_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/processor"
)

// A codec whose dependency (a schema registry) is down fails with codec.ErrUnavailable:
// the records are not bad, so even under DeadLetter none is dead-lettered; the batch
// waits, nothing is committed meanwhile, and processing resumes once the dependency is
// back. Both directions: a decoder and an output encoder.
func TestCodecUnavailableWaitsInsteadOfDeadLettering(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 2}, embedded.Topic{Name: "out", Partitions: 2}, embedded.Topic{Name: "dlq", Partitions: 1})
	produceInts(t, brokers, "in", 2, 100)

	// Each dependency is down until 500 ms after the first call that met the outage: the
	// decoder's is back first, the encoder's (met only once records decode) later.
	var decodeDown, encodeDown atomic.Bool
	var decodeFailures, encodeFailures atomic.Int32
	decodeDown.Store(true)
	encodeDown.Store(true)
	outage := fmt.Errorf("registry: %w", codec.ErrUnavailable)
	dec := codec.DecoderFunc[int64](func(b []byte) (int64, error) {
		if decodeDown.Load() {
			if decodeFailures.Add(1) == 1 {
				time.AfterFunc(500*time.Millisecond, func() { decodeDown.Store(false) })
			}
			return 0, outage
		}
		return codec.Int64().Decode(b)
	})
	out := processor.NewOutput("out", codec.Int64(), codec.Encoder[int64](codec.EncoderFunc[int64](func(v int64) ([]byte, error) {
		if encodeDown.Load() {
			if encodeFailures.Add(1) == 1 {
				time.AfterFunc(500*time.Millisecond, func() { encodeDown.Store(false) })
			}
			return nil, outage
		}
		return binary.BigEndian.AppendUint64(nil, uint64(v)), nil
	})))

	var mu sync.Mutex
	handled := map[int64]int{}
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "g", BatchSize: 50, BatchWait: 5 * time.Millisecond, ErrorPolicy: processor.Retry(1, processor.Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond}, processor.DeadLetter("dlq"))},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: dec}},
		processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
			for _, r := range b.Records {
				if err := out.Send(b, r.Key, 2*r.Value); err != nil {
					return err
				}
			}
			mu.Lock()
			for _, r := range b.Records {
				handled[r.Value]++
			}
			mu.Unlock()
			return nil
		}))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool {
		c := committed(t, brokers, "g", "in", 2)
		return c[0] == 50 && c[1] == 50
	}))
	assert.Len(t, handled, 100, "every record handled")
	assert.Positive(t, decodeFailures.Load())
	assert.Positive(t, encodeFailures.Load())
	assert.Len(t, consumeAll(t, brokers, "out", 100, 20*time.Second), 100)
	assert.Empty(t, consumeAll(t, brokers, "dlq", 1, 2*time.Second), "an outage dead-letters nothing")
}

// The same while a failing batch is being split into single records: a record whose
// handler call meets the outage waits for it instead of being dead-lettered.
func TestCodecUnavailableWhileSplittingABatch(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "in", Partitions: 1}, embedded.Topic{Name: "out", Partitions: 1}, embedded.Topic{Name: "dlq", Partitions: 1})
	produceInts(t, brokers, "in", 1, 20)

	var down atomic.Bool
	down.Store(true)
	var failures atomic.Int32
	out := processor.NewOutput("out", codec.Int64(), codec.Encoder[int64](codec.EncoderFunc[int64](func(v int64) ([]byte, error) {
		if down.Load() {
			failures.Add(1)
			return nil, fmt.Errorf("registry: %w", codec.ErrUnavailable)
		}
		return binary.BigEndian.AppendUint64(nil, uint64(v)), nil
	})))
	var splitCalls atomic.Int32
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "g", BatchSize: 20, BatchWait: 50 * time.Millisecond, ErrorPolicy: processor.DeadLetter("dlq")},
		[]processor.Input[int64, int64]{{Topic: "in", Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
			if len(b.Records) > 1 {
				return fmt.Errorf("batch-level failure") // sends the batch to the one-at-a-time pass
			}
			if splitCalls.Add(1) == 5 {
				time.AfterFunc(300*time.Millisecond, func() { down.Store(false) }) // the dependency is back 300 ms later
			}
			return out.Send(b, b.Records[0].Key, b.Records[0].Value)
		}))
	require.NoError(t, err)
	require.NoError(t, runUntil(t, p, func() bool { return committed(t, brokers, "g", "in", 1)[0] == 20 }))
	assert.Positive(t, failures.Load())
	assert.Len(t, consumeAll(t, brokers, "out", 20, 20*time.Second), 20)
	assert.Empty(t, consumeAll(t, brokers, "dlq", 1, 2*time.Second), "an outage dead-letters nothing")
}
