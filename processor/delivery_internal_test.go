package processor

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/telemetry"
)

var (
	errTimedOut  = kafka.NewError(kafka.ErrMsgTimedOut, "Local: Message timed out", false)
	errTooLarge  = kafka.NewError(kafka.ErrMsgSizeTooLarge, "Broker: Message size too large", false)
	errProducerX = fmt.Errorf("%w: fenced", produce.ErrFatal)
	errNoTopic   = kafka.NewError(kafka.ErrUnknownTopicOrPart, "Broker: Unknown topic or partition", false)
	errNoAuth    = kafka.NewError(kafka.ErrTopicAuthorizationFailed, "Broker: Topic authorization failed", false)
)

// TestDecide: the delivery-failure step's remedy for each policy and failure.
func TestDecide(t *testing.T) {
	first := &record.Message{Topic: "in", Partition: 3, Offset: 40}
	fast := Backoff{Initial: time.Millisecond}
	for _, c := range []struct {
		name  string
		pol   Policy
		round failedRound
		want  decision
		stage Stage // of the stop error
	}{
		{"stop", Stop(), failedRound{round: 1, err: errTimedOut, failed: 2}, decision{remedy: remedyStop}, StageProduce},
		{"skip", Skip(), failedRound{round: 1, err: errTimedOut, failed: 2}, decision{remedy: remedySkip}, ""},
		{"dead letter", DeadLetter("dlq"), failedRound{round: 1, err: errTimedOut, failed: 1}, decision{remedy: remedyDeadLetter, topic: "dlq"}, ""},
		{"retry first", Retry(2, fast, Skip()), failedRound{round: 1, err: errTimedOut, failed: 1}, decision{remedy: remedyResend, attempt: 0}, ""},
		{"retry last", Retry(2, fast, Skip()), failedRound{round: 2, err: errTimedOut, failed: 1}, decision{remedy: remedyResend, attempt: 1}, ""},
		{"retries spent", Retry(2, fast, DeadLetter("dlq")), failedRound{round: 3, err: errTimedOut, failed: 1}, decision{remedy: remedyDeadLetter, topic: "dlq"}, ""},
		{"fatal producer under retry", Retry(2, fast, Skip()), failedRound{round: 1, err: errProducerX, failed: 1}, decision{remedy: remedyStop}, StageProduce},
		{"fatal producer under skip", Skip(), failedRound{round: 1, err: errProducerX, failed: 1}, decision{remedy: remedyStop}, StageProduce},
		{"dead letters failed", DeadLetter("dlq"), failedRound{round: 2, deadLettered: true, err: errTimedOut, failed: 1}, decision{remedy: remedyStop}, StageDeadLetter},
		{"refused request shared: isolate", DeadLetter("dlq"), failedRound{round: 1, err: errTooLarge, failed: 5}, decision{remedy: remedyIsolate}, ""},
		{"refused alone", DeadLetter("dlq"), failedRound{round: 1, isolated: true, err: errTooLarge, failed: 2}, decision{remedy: remedyDeadLetter, topic: "dlq"}, ""},
		{"refused, one output: nothing to isolate", Skip(), failedRound{round: 1, err: errTooLarge, failed: 1}, decision{remedy: remedySkip}, ""},
		{"refused under stop: no isolation", Stop(), failedRound{round: 1, err: errTooLarge, failed: 5}, decision{remedy: remedyStop}, StageProduce},
		{"refused under retry: resend first", Retry(1, fast, Skip()), failedRound{round: 1, err: errTooLarge, failed: 5}, decision{remedy: remedyResend}, ""},
		{"isolated under retry: no resend", Retry(1, fast, Skip()), failedRound{round: 1, isolated: true, err: errTooLarge, failed: 2}, decision{remedy: remedySkip}, ""},
		{"missing topic under dead letter", DeadLetter("dlq"), failedRound{round: 1, err: errNoTopic, topic: "totals", failed: 50}, decision{remedy: remedyStop}, StageProduce},
		{"unauthorized topic under skip", Skip(), failedRound{round: 1, err: errNoAuth, topic: "totals", failed: 1}, decision{remedy: remedyStop}, StageProduce},
		{"missing topic under retry: retried first", Retry(1, fast, Skip()), failedRound{round: 1, err: errNoTopic, topic: "totals", failed: 1}, decision{remedy: remedyResend}, ""},
		{"missing topic, retries spent", Retry(1, fast, DeadLetter("dlq")), failedRound{round: 2, err: errNoTopic, topic: "totals", failed: 1}, decision{remedy: remedyStop}, StageProduce},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.round.first = first
			got := decide(c.pol, c.round)
			assert.Equal(t, c.want.remedy, got.remedy)
			assert.Equal(t, c.want.attempt, got.attempt)
			assert.Equal(t, c.want.topic, got.topic)
			if c.want.remedy != remedyStop {
				assert.NoError(t, got.err)
				return
			}
			var pe *Error
			require.ErrorAs(t, got.err, &pe)
			assert.Equal(t, Error{Topic: "in", Partition: 3, Offset: 40, Stage: c.stage}, Error{Topic: pe.Topic, Partition: pe.Partition, Offset: pe.Offset, Stage: pe.Stage})
			assert.ErrorIs(t, got.err, c.round.err)
			if c.round.topic != "" {
				assert.ErrorContains(t, got.err, `output topic "totals" refused`, "the error names the topic")
			}
		})
	}
}

// fakeSink acknowledges or fails each output as refuse says, and records every round it
// is given; its settle reports failed outputs as the at-least-once sink does.
type fakeSink struct {
	rounds [][]string // the values of each round's messages
	refuse func(round int, m *record.Message) error
}

func (*fakeSink) open(group.Config, group.WorkerFunc) (*group.Engine, error) { return nil, nil }
func (*fakeSink) start(context.Context, context.CancelFunc)                  {}
func (*fakeSink) wait() error                                                { return nil }
func (*fakeSink) close(time.Duration)                                        {}

func (s *fakeSink) send(_ context.Context, _ lane, f *flight, msgs []*record.Message) error {
	round := len(s.rounds)
	values := make([]string, len(msgs))
	f.begin(len(msgs))
	for i, m := range msgs {
		values[i] = string(m.Value)
		f.Delivered(m, s.refuse(round, m))
	}
	s.rounds = append(s.rounds, values)
	f.handedOver()
	return nil
}

func (s *fakeSink) settle(_ lane, f *flight) error {
	if err, failed := f.outcome(); err != nil {
		return &outputsFailed{err: err, failed: failed}
	}
	return nil
}

// testPipeline is a pipeline without a slot around the given sink: a runner whose handler
// sends each record's value, prefixed "out-", to "out".
func testPipeline(pol Policy, s sink) *pipeline[string, string] {
	out := NewOutput("out", codec.String(), codec.String())
	h := HandlerFunc[string, string](func(_ context.Context, b *Batch[string, string]) error {
		for _, r := range b.Records {
			if err := out.Send(b, r.Key, "out-"+r.Value); err != nil {
				return err
			}
		}
		return nil
	})
	obs := telemetry.New(nil, nil, nil).ProcessorObserver("g", 0)
	run := &runner[string, string]{
		inputs: []Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
		h:      h, policy: pol, group: "g", log: slog.New(slog.DiscardHandler), obs: obs,
		ctx: context.Background(), wait: context.Background(), spare: &record.Pool{},
	}
	return &pipeline[string, string]{run: run, sink: s, policy: pol, obs: obs, done: make(chan *flight, 2)}
}

// handled runs the pipeline's runner on inputs "v0".."v<n-1>" and sends the outputs as the
// batch's first round.
func handled(t *testing.T, pl *pipeline[string, string], n int) *flight {
	inputs := make([]record.Message, n)
	for i := range inputs {
		inputs[i] = record.Message{Topic: "in", Offset: int64(100 + i), Key: []byte("k"), Value: []byte("v" + strconv.Itoa(i))}
	}
	outs, err := pl.run.handle(context.Background(), inputs)
	require.NoError(t, err)
	f := &flight{inputs: inputs, outs: outs, next: nextOffsets(inputs), doneCh: pl.done}
	require.NoError(t, pl.sink.send(context.Background(), pl.lane, f, record.Pointers(f.outs)))
	<-pl.done
	return f
}

// redeliverOnce settles f's completed round and carries out the policy once.
func redeliverOnce(t *testing.T, pl *pipeline[string, string], f *flight) (bool, error) {
	err := pl.sink.settle(pl.lane, f)
	var of *outputsFailed
	require.ErrorAs(t, err, &of)
	return pl.redeliver(f, of)
}

// TestRedeliverDeadLettersOnlyRecordsRefusedAlone: outputs that failed together because
// the broker refused their produce request are produced one at a time; only the input
// whose output is refused alone is dead-lettered, with the produce error.
func TestRedeliverDeadLettersOnlyRecordsRefusedAlone(t *testing.T) {
	s := &fakeSink{refuse: func(round int, m *record.Message) error {
		if round == 0 || string(m.Value) == "out-v1" && m.Topic == "out" {
			return errTooLarge // the first round shares one request; out-v1 is too large alone
		}
		return nil
	}}
	pl := testPipeline(DeadLetter("dlq"), s)
	f := handled(t, pl, 3)
	settled, err := redeliverOnce(t, pl, f)
	require.NoError(t, err)
	assert.False(t, settled, "the dead letter is a new round in flight")
	assert.Equal(t, [][]string{{"out-v0", "out-v1", "out-v2"}, {"out-v0"}, {"out-v1"}, {"out-v2"}, {"v1"}}, s.rounds,
		"first round, then each failed output alone, then the guilty input's dead letter")
	require.True(t, f.deadLettered)
	require.Len(t, f.outs, 1)
	dl := f.outs[0]
	assert.Equal(t, "dlq", dl.Topic)
	hdr := map[string]string{}
	for _, h := range dl.Headers {
		hdr[h.Key] = string(h.Value)
	}
	assert.Equal(t, "101", hdr[HeaderSourceOffset])
	assert.Equal(t, string(StageProduce), hdr[HeaderStage])
	assert.Contains(t, hdr[HeaderError], "Message size too large")

	<-pl.done // the dead letter's round is acknowledged: the batch settles
	assert.NoError(t, pl.sink.settle(pl.lane, f))
}

// TestRedeliverIsolatedAllThrough: when every failed output goes through on its own, the
// batch settles without a dead letter.
func TestRedeliverIsolatedAllThrough(t *testing.T) {
	s := &fakeSink{refuse: func(round int, _ *record.Message) error {
		if round == 0 {
			return errTooLarge
		}
		return nil
	}}
	pl := testPipeline(Skip(), s)
	f := handled(t, pl, 2)
	settled, err := redeliverOnce(t, pl, f)
	require.NoError(t, err)
	assert.True(t, settled)
	assert.False(t, f.deadLettered)
	assert.NoError(t, pl.sink.settle(pl.lane, f), "the failure was forgiven")
	assert.Len(t, s.rounds, 3)
}

// TestRedeliverRetryThenSkip: Retry resends only the failed outputs, then the final Skip
// settles the batch; a failure while shutting down leaves the batch to the next owner.
func TestRedeliverRetryThenSkip(t *testing.T) {
	s := &fakeSink{refuse: func(_ int, m *record.Message) error {
		if string(m.Value) == "out-v0" {
			return errTimedOut
		}
		return nil
	}}
	pl := testPipeline(Retry(1, Backoff{Initial: time.Millisecond}, Skip()), s)
	f := handled(t, pl, 2)
	settled, err := redeliverOnce(t, pl, f)
	require.NoError(t, err)
	assert.False(t, settled, "resent")
	assert.Equal(t, [][]string{{"out-v0", "out-v1"}, {"out-v0"}}, s.rounds)
	<-pl.done
	settled, err = redeliverOnce(t, pl, f)
	require.NoError(t, err)
	assert.True(t, settled, "retries spent: skipped")
	assert.Equal(t, 2, f.retries)

	f = handled(t, pl, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	pl.run.ctx = ctx
	_, err = redeliverOnce(t, pl, f)
	assert.ErrorIs(t, err, errAbandoned)
}

// fakeOwner records what a sink stores.
type fakeOwner struct {
	stored []record.Offset
	owned  bool
	err    error
}

func (o *fakeOwner) Store(offsets ...record.Offset) error {
	if o.err != nil {
		return o.err
	}
	o.stored = append(o.stored, offsets...)
	return nil
}

func (o *fakeOwner) Owned() bool { return o.owned }

// TestSinksSettleThroughTheirLane: at-least-once and the replay's discard store a settled
// batch's offsets with the lane's owner, and nothing when outputs failed; the store's
// error is the batch's.
func TestSinksSettleThroughTheirLane(t *testing.T) {
	next := []record.Offset{{TopicPartition: record.TopicPartition{Topic: "in", Partition: 2}, Offset: 7}}
	for _, s := range []sink{&atLeastOnce{}, discard{}} {
		t.Run(fmt.Sprintf("%T", s), func(t *testing.T) {
			o := &fakeOwner{owned: true}
			l := lane{slot: 2, epoch: 1, ctx: context.Background(), owner: o}
			f := &flight{next: next, doneCh: make(chan *flight, 1)}
			f.begin(0)
			f.handedOver()
			require.NoError(t, s.settle(l, f))
			assert.Equal(t, next, o.stored)

			o.err = group.ErrNotOwned
			assert.ErrorIs(t, s.settle(l, f), group.ErrNotOwned)
		})
	}
	o := &fakeOwner{owned: true}
	f := &flight{next: next, doneCh: make(chan *flight, 1)}
	f.begin(1)
	f.Delivered(&record.Message{}, errTimedOut)
	var of *outputsFailed
	require.ErrorAs(t, (&atLeastOnce{}).settle(lane{owner: o}, f), &of)
	assert.Empty(t, o.stored, "no offset stored past an output not acknowledged")
}

// TestTxnProduceRefusesEndedOwnership: a batch of an ownership that ended, or whose work
// was aborted, is not put into the transaction.
func TestTxnProduceRefusesEndedOwnership(t *testing.T) {
	tx := &txn{log: slog.New(slog.DiscardHandler), life: context.Background(), dead: map[uint64]bool{4: true}}
	f := &flight{doneCh: make(chan *flight, 1)}
	msgs := []*record.Message{{Topic: "out"}}
	err := tx.produce(context.Background(), lane{slot: 1, epoch: 3, ctx: context.Background(), owner: &fakeOwner{owned: false}}, f, msgs)
	assert.ErrorIs(t, err, errAbandoned, "revoked")
	err = tx.produce(context.Background(), lane{slot: 1, epoch: 4, ctx: context.Background(), owner: &fakeOwner{owned: true}}, f, msgs)
	assert.ErrorIs(t, err, errAbandoned, "aborted, rewind coming")
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	tx.mu.Lock() // a commit holds the lock
	err = tx.produce(context.Background(), lane{slot: 1, epoch: 3, ctx: ended, owner: &fakeOwner{owned: true}}, f, msgs)
	tx.mu.Unlock()
	assert.ErrorIs(t, err, errAbandoned, "revoked while a commit held the lock")
}
