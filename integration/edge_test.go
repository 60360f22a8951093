package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

func produceStrings(t *testing.T, brokers, topic string, from, n int) {
	t.Helper()
	recs := make([]samsatest.KV[string, string], n)
	for i := range recs {
		recs[i] = samsatest.KV[string, string]{Key: key(from + i), Value: fmt.Sprintf("v%d", from+i)}
	}
	samsatest.Produce(t, brokers, processor.NewOutput(topic, codec.String(), codec.String()), recs...)
}

// An input topic deleted while the processor runs: Run stops by itself with an error
// naming the topic, after committing what it processed.
func TestInputTopicDeletedStopsRun(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	in, out, group := stack.UniqueName("del-in"), stack.UniqueName("del-out"), stack.UniqueName("del")
	harness.CreateTopic(t, brokers, in, 2, 1)
	harness.CreateTopic(t, brokers, out, 2, 1)
	produceStrings(t, brokers, in, 0, 200)
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: group, CommitInterval: 100 * time.Millisecond},
		[]processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
		copyHandler(processor.NewOutput(out, codec.String(), codec.String())))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	require.Eventually(t, func() bool {
		c := harness.CommittedOffsets(t, brokers, group, in, 2)
		return c[0]+c[1] == 200
	}, time.Minute, 100*time.Millisecond, "the 200 records were never committed")

	ac := harness.NewAdmin(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = ac.DeleteTopics(ctx, []string{in})
	require.NoError(t, err)
	deleted := time.Now()
	select {
	case err := <-done:
		t.Logf("Run returned %s after the topic was deleted: %v", time.Since(deleted).Round(time.Millisecond), err)
		require.Error(t, err)
		assert.Contains(t, err.Error(), in, "the error names the deleted topic")
	case <-time.After(45 * time.Second):
		p.Close()
		t.Fatal("Run went on after its input topic was deleted")
	}
}

// An output topic that does not exist (auto-creation is off on the test broker): Run
// fails with an error naming the topic, without waiting out the producer's whole
// message timeout, and commits nothing, under every error policy: no record is to
// blame, so none is skipped or dead-lettered for it.
func TestMissingOutputTopicFailsNamingIt(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	dlq := stack.UniqueName("noout-dlq")
	harness.CreateTopic(t, brokers, dlq, 1, 1)
	for _, tc := range []struct {
		name   string
		policy processor.Policy
	}{{"stop", processor.Stop()}, {"dead letter", processor.DeadLetter(dlq)}, {"skip", processor.Skip()}} {
		t.Run(tc.name, func(t *testing.T) {
			in, out, group := stack.UniqueName("noout-in"), stack.UniqueName("noout-missing"), stack.UniqueName("noout")
			harness.CreateTopic(t, brokers, in, 1, 1)
			produceStrings(t, brokers, in, 0, 10)
			p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: group, ErrorPolicy: tc.policy},
				[]processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
				copyHandler(processor.NewOutput(out, codec.String(), codec.String())))
			require.NoError(t, err)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err = p.Run(ctx)
			took := time.Since(start)
			t.Logf("Run failed after %s: %v", took.Round(time.Millisecond), err)
			require.Error(t, err)
			assert.Contains(t, err.Error(), out, "the error names the missing output topic")
			assert.Less(t, took, 25*time.Second, "librdkafka's 30 s topic propagation wait is not the processor's")
			assert.Equal(t, map[int32]int64{}, nonZero(harness.CommittedOffsets(t, brokers, group, in, 1)), "nothing committed")
		})
	}
	assert.Equal(t, map[int32]int64{}, nonZero(harness.EndOffsets(t, brokers, dlq, 1)), "nothing dead-lettered")
}

func nonZero(m map[int32]int64) map[int32]int64 {
	out := map[int32]int64{}
	for p, o := range m {
		if o > 0 {
			out[p] = o
		}
	}
	return out
}

// Outputs the broker refuses for good (over the topic's max.message.bytes) under
// DeadLetter: the error is permanent, so the records go to the dead-letter topic at once
// rather than after the producer's retries, and only those records.
func TestOversizeOutputsDeadLetteredPromptly(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	in, out, dlq, group := stack.UniqueName("big-in"), stack.UniqueName("big-out"), stack.UniqueName("big-dlq"), stack.UniqueName("big")
	harness.CreateTopic(t, brokers, in, 2, 1)
	harness.CreateTopic(t, brokers, dlq, 1, 1)
	ac := harness.NewAdmin(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := ac.CreateTopics(ctx, []kafka.TopicSpecification{{Topic: out, NumPartitions: 2, ReplicationFactor: 1,
		Config: map[string]string{"max.message.bytes": "2000"}}})
	require.NoError(t, err)
	require.Equal(t, kafka.ErrNoError, res[0].Error.Code(), "%v", res[0].Error)
	const n = 200
	produceStrings(t, brokers, in, 0, n)
	outT := processor.NewOutput(out, codec.String(), codec.String())
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: group, CommitInterval: 100 * time.Millisecond, ErrorPolicy: processor.DeadLetter(dlq)},
		[]processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
		processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
			for _, r := range b.Records {
				v := r.Value
				if r.Offset%10 == 3 { // one in ten is far over the topic's limit
					v = strings.Repeat("x", 8000)
				}
				if err := outT.Send(b, r.Key, v); err != nil {
					return err
				}
			}
			return nil
		}))
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Run(runCtx) }()
	require.Eventually(t, func() bool {
		c := harness.CommittedOffsets(t, brokers, group, in, 2)
		return c[0]+c[1] == n
	}, 90*time.Second, 100*time.Millisecond, "the inputs were never all committed")
	took := time.Since(start)
	stop()
	require.NoError(t, <-done)
	dls, err := samsatest.ReadAll(ctx, brokers, dlq, codec.String(), codec.String())
	require.NoError(t, err)
	outs, err := samsatest.ReadAll(ctx, brokers, out, codec.String(), codec.String())
	require.NoError(t, err)
	t.Logf("%d inputs committed in %s: %d dead letters, %d outputs", n, took.Round(time.Millisecond), len(dls), len(outs))
	assert.Len(t, dls, n/10, "one in ten dead-lettered")
	assert.Len(t, outs, n-n/10, "the others produced")
	for _, d := range dls {
		for _, h := range d.Headers {
			if h.Key == processor.HeaderStage {
				assert.Equal(t, "produce", string(h.Value))
			}
		}
	}
}
