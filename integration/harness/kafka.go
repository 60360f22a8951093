package harness

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/stack"
)

// NewAdmin returns an admin client of brokers, closed when tb ends.
func NewAdmin(tb testing.TB, brokers string) *kafka.AdminClient {
	tb.Helper()
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	require.NoError(tb, err)
	tb.Cleanup(ac.Close)
	return ac
}

// CreateTopicWith creates the topic of spec through ac and waits, until ctx ends, for
// every partition to have a leader. created says whether the topic was created (an
// error after that: its partitions did not all get leaders).
func CreateTopicWith(ctx context.Context, ac *kafka.AdminClient, spec kafka.TopicSpecification) (created bool, err error) {
	name := spec.Topic
	res, err := ac.CreateTopics(ctx, []kafka.TopicSpecification{spec})
	if err == nil && res[0].Error.Code() != kafka.ErrNoError {
		err = res[0].Error
	}
	if err != nil {
		return false, fmt.Errorf("create topic %s: %w", name, err)
	}
	for {
		if md, err := ac.GetMetadata(&name, false, 2000); err == nil {
			tm, ok := md.Topics[name]
			if ok && len(tm.Partitions) == spec.NumPartitions && !slices.ContainsFunc(tm.Partitions, func(p kafka.PartitionMetadata) bool { return p.Leader < 0 }) {
				return true, nil
			}
		}
		select {
		case <-ctx.Done():
			return true, fmt.Errorf("topic %s never got leaders for all partitions: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// CreateTopic creates a topic with the given partitions and replication factor and waits
// until every partition has a leader.
func CreateTopic(tb testing.TB, brokers, name string, partitions, rf int) {
	tb.Helper()
	CreateTopicConfig(tb, brokers, name, partitions, rf, nil)
}

// CreateTopicConfig is CreateTopic with topic configuration (nil: the broker's defaults).
func CreateTopicConfig(tb testing.TB, brokers, name string, partitions, rf int, config map[string]string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	spec := kafka.TopicSpecification{Topic: name, NumPartitions: partitions, ReplicationFactor: rf, Config: config}
	_, err := CreateTopicWith(ctx, NewAdmin(tb, brokers), spec)
	require.NoError(tb, err)
}

// EndOffsets returns the high watermark of each partition of topic.
func EndOffsets(tb testing.TB, brokers, topic string, partitions int) map[int32]int64 {
	tb.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": stack.UniqueName("probe"), "log_level": 3})
	require.NoError(tb, err)
	defer c.Close()
	ends := make(map[int32]int64, partitions)
	for p := range int32(partitions) {
		// Retried: right after a broker restart the leader may still be moving.
		var err error
		require.Eventually(tb, func() bool {
			var high int64
			_, high, err = c.QueryWatermarkOffsets(topic, p, 5000)
			ends[p] = high
			return err == nil
		}, 30*time.Second, 200*time.Millisecond, "end offset of %s[%d]: %v", topic, p, err)
	}
	return ends
}

// CommittedOffsets returns the group's committed offset for each partition of topic
// (kafka.OffsetInvalid, -1001, where nothing is committed), retried while the coordinator
// loads. See Probe for how it reads them.
func CommittedOffsets(tb testing.TB, brokers, group, topic string, partitions int) map[int32]int64 {
	tb.Helper()
	out, err := FetchCommitted(brokers, group, topic, partitions)
	for attempt := 0; err != nil && attempt < 20; attempt++ {
		time.Sleep(250 * time.Millisecond)
		out, err = FetchCommitted(brokers, group, topic, partitions)
	}
	require.NoError(tb, err, "committed offsets of group %s on %s", group, topic)
	return out
}

// FetchCommitted reads the group's committed offsets once, through a fresh consumer of
// the group that never joins it.
func FetchCommitted(brokers, group, topic string, partitions int) (map[int32]int64, error) {
	c, err := groupConsumer(brokers, group)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return committedThrough(c, topic, partitions)
}

func groupConsumer(brokers, group string) (*kafka.Consumer, error) {
	return kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": false, "log_level": 3})
}

func committedThrough(c *kafka.Consumer, topic string, partitions int) (map[int32]int64, error) {
	tps := make([]kafka.TopicPartition, partitions)
	for p := range partitions {
		tps[p] = kafka.TopicPartition{Topic: &topic, Partition: int32(p)}
	}
	res, err := c.Committed(tps, 10_000)
	if err != nil {
		return nil, err
	}
	out := make(map[int32]int64, partitions)
	for _, tp := range res {
		if tp.Error != nil {
			return nil, tp.Error
		}
		out[tp.Partition] = int64(tp.Offset)
	}
	return out, nil
}

// Probe reads a group's committed offsets on one topic, for polling. It reads them
// through a consumer of that group that never joins it (rd_kafka_committed), not through
// the AdminClient's ListConsumerGroupOffsets, which crashes the process with SIGSEGV when
// the broker answers NOT_COORDINATOR, as a freshly started broker does while it loads
// __consumer_offsets (librdkafka issue #5040, NULL cgrp in rd_kafka_handle_OffsetFetch;
// seen with confluent-kafka-go v2.15.0). NewProbe's makes a consumer per read;
// NewHeldProbe's keeps one for the test.
type Probe struct {
	brokers, group, topic string
	partitions            int
	c                     *kafka.Consumer // nil: a fresh one per read
}

// NewProbe returns a probe that reads through a fresh consumer each time.
func NewProbe(brokers, group, topic string, partitions int) *Probe {
	return &Probe{brokers: brokers, group: group, topic: topic, partitions: partitions}
}

// NewHeldProbe returns a probe that reads through one consumer, closed when tb ends.
func NewHeldProbe(tb testing.TB, brokers, group, topic string, partitions int) *Probe {
	tb.Helper()
	c, err := groupConsumer(brokers, group)
	require.NoError(tb, err)
	tb.Cleanup(func() { c.Close() })
	return &Probe{brokers: brokers, group: group, topic: topic, partitions: partitions, c: c}
}

// Committed returns the committed offset per partition (-1001 where nothing is committed).
func (p *Probe) Committed() (map[int32]int64, error) {
	if p.c == nil {
		return FetchCommitted(p.brokers, p.group, p.topic, p.partitions)
	}
	return committedThrough(p.c, p.topic, p.partitions)
}

// CommittedRetry reads the committed offsets, retrying for up to 30 s.
func (p *Probe) CommittedRetry(tb testing.TB) map[int32]int64 {
	tb.Helper()
	var c map[int32]int64
	var err error
	for range 60 {
		if c, err = p.Committed(); err == nil {
			return c
		}
		time.Sleep(500 * time.Millisecond)
	}
	require.NoError(tb, err, "committed offsets of %s", p.group)
	return nil
}

// WaitCommitted polls until the committed offsets equal ends, or timeout. It returns the
// last committed offsets seen and whether they matched. stop, when not nil and it
// returns an error, ends the wait early (a processor failed).
func (p *Probe) WaitCommitted(tb testing.TB, ends map[int32]int64, timeout time.Duration, stop func() error) (map[int32]int64, bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var last map[int32]int64
	for {
		if c, err := p.Committed(); err == nil {
			last = c
			if maps.Equal(c, ends) {
				return c, true
			}
		}
		if stop != nil {
			if err := stop(); err != nil {
				tb.Errorf("while waiting for commits: %v", err)
				return last, false
			}
		}
		if time.Now().After(deadline) {
			return last, false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// CommitSample is a group's committed offsets, At taken right after the reading.
type CommitSample struct {
	At        time.Time
	Committed map[int32]int64
}

// CommitSampler reads a group's committed offsets at an interval on its own goroutine.
type CommitSampler struct {
	stop    func()
	out     chan []CommitSample
	once    sync.Once
	samples []CommitSample
}

// SampleCommits samples through p every interval until Stop (or tb's end, which must come
// before p's). A reading that took maxWait or longer (when not 0) is dropped, so that a
// sample's instant stays that close to its reading; each, when not nil, sees every sample
// kept, on the sampler's goroutine.
func SampleCommits(tb testing.TB, p *Probe, interval, maxWait time.Duration, each func(CommitSample)) *CommitSampler {
	stop := make(chan struct{})
	s := &CommitSampler{stop: sync.OnceFunc(func() { close(stop) }), out: make(chan []CommitSample, 1)}
	go func() {
		var samples []CommitSample
		defer func() { s.out <- samples }()
		for {
			asked := time.Now()
			if c, err := p.Committed(); err == nil && (maxWait == 0 || time.Since(asked) < maxWait) {
				smp := CommitSample{At: time.Now(), Committed: c}
				samples = append(samples, smp)
				if each != nil {
					each(smp)
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	tb.Cleanup(func() { s.Stop() })
	return s
}

// Stop stops sampling and returns the samples (again: the same ones).
func (s *CommitSampler) Stop() []CommitSample {
	s.once.Do(func() {
		s.stop()
		s.samples = <-s.out
	})
	return s.samples
}

// RequireCommitted waits (WaitCommitted) for the group's committed offsets on topic to
// reach ends and fails tb if they never do.
func RequireCommitted(tb testing.TB, brokers, group, topic string, ends map[int32]int64, timeout time.Duration, stop func() error) {
	tb.Helper()
	committed, ok := NewProbe(brokers, group, topic, len(ends)).WaitCommitted(tb, ends, timeout, stop)
	require.True(tb, ok, "committed offsets %v never reached end offsets %v", committed, ends)
}

// Progress sums the committed offsets (0 where nothing is committed).
func Progress(committed map[int32]int64) int64 {
	var n int64
	for _, o := range committed {
		if o > 0 {
			n += o
		}
	}
	return n
}

// NewProducer is the producer tests write their input with: idempotent (acks=all), so
// a broker retry never duplicates an input record, with a short linger and quiet logs.
func NewProducer(brokers string) (*kafka.Producer, error) {
	return kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "enable.idempotence": true,
		"acks": "all", "linger.ms": 5, "log_level": 3})
}

// Produce produces m through p, flushing while the local queue is full (up to 600
// times); it returns the last error when that did not help.
func Produce(p *kafka.Producer, m *kafka.Message, dr chan kafka.Event) error {
	for attempt := 0; ; attempt++ {
		err := p.Produce(m, dr)
		if err == nil || attempt > 600 {
			return err
		}
		p.Flush(100) // local queue full: let it drain
	}
}

// ProduceMessages produces msgs (idempotent, acks=all) and returns where each landed.
func ProduceMessages(tb testing.TB, brokers string, msgs []*kafka.Message) []kafka.TopicPartition {
	tb.Helper()
	p, err := NewProducer(brokers)
	require.NoError(tb, err)
	defer p.Close()
	dr := make(chan kafka.Event, len(msgs))
	for i, m := range msgs {
		m.Opaque = i
		require.NoError(tb, Produce(p, m, dr), "produce")
	}
	at := make([]kafka.TopicPartition, len(msgs))
	deadline := time.After(2 * time.Minute)
	for n := 0; n < len(msgs); {
		select {
		case ev := <-dr:
			m, ok := ev.(*kafka.Message)
			if !ok {
				continue
			}
			require.NoError(tb, m.TopicPartition.Error)
			at[m.Opaque.(int)] = m.TopicPartition
			n++
		case <-deadline:
			tb.Fatalf("only %d of %d delivery reports after 2m", n, len(msgs))
		}
	}
	return at
}

// DrainDeliveries waits for n delivery reports on ch and returns the keys acknowledged
// and the number of failures.
func DrainDeliveries(tb testing.TB, ch <-chan kafka.Event, n int, timeout time.Duration) (acked map[string]bool, failed int) {
	tb.Helper()
	acked = make(map[string]bool, n)
	deadline := time.After(timeout)
	for i := 0; i < n; i++ {
		select {
		case ev := <-ch:
			m, ok := ev.(*kafka.Message)
			if !ok {
				i--
				continue
			}
			if m.TopicPartition.Error != nil {
				failed++
				continue
			}
			acked[string(m.Key)] = true
		case <-deadline:
			tb.Fatalf("only %d of %d delivery reports after %s", i, n, timeout)
		}
	}
	return acked, failed
}

// DrainAcks counts n delivery reports from dr (or stops when quit closes) on its own
// goroutine: acknowledged ones into acked, failures into failed, the first error kept.
// The returned channel closes when it is done.
func DrainAcks(n int, dr <-chan kafka.Event, quit <-chan struct{}, acked, failed *atomic.Int64, firstErr *atomic.Value) <-chan struct{} {
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for seen := 0; seen < n; {
			var ev kafka.Event
			select {
			case ev = <-dr:
			case <-quit:
				return
			}
			m, ok := ev.(*kafka.Message)
			if !ok {
				continue
			}
			seen++
			if m.TopicPartition.Error != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, m.TopicPartition.Error)
				continue
			}
			acked.Add(1)
		}
	}()
	return drained
}

// ListEnds returns the end offset of each partition of topic at isolation level iso: the
// high watermark (read_uncommitted) or the last stable offset (read_committed).
func ListEnds(ac *kafka.AdminClient, topic string, partitions int, iso kafka.IsolationLevel) (map[int32]int64, error) {
	req := make(map[kafka.TopicPartition]kafka.OffsetSpec, partitions)
	for p := range int32(partitions) {
		req[kafka.TopicPartition{Topic: &topic, Partition: p}] = kafka.LatestOffsetSpec
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := ac.ListOffsets(ctx, req, kafka.SetAdminIsolationLevel(iso))
	if err != nil {
		return nil, err
	}
	out := make(map[int32]int64, partitions)
	for tp, info := range res.ResultInfos {
		if info.Error.Code() != kafka.ErrNoError {
			return nil, fmt.Errorf("%s[%d]: %v", topic, tp.Partition, info.Error)
		}
		out[tp.Partition] = int64(info.Offset)
	}
	return out, nil
}

// WaitTxnsFinished waits until no transaction is open on topic: the read_committed end
// (last stable offset) equals the high watermark on every partition
// (EosTestDriver.verifyAllTransactionFinished). It returns those ends. Each attempt uses
// a fresh admin client: after a broker restart a long-lived one can keep sending a stale
// leader epoch and get FENCED_LEADER_EPOCH until its metadata refreshes (5 min).
func WaitTxnsFinished(tb testing.TB, brokers, topic string, partitions int, timeout time.Duration) map[int32]int64 {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var lso, hw map[int32]int64
	var err error
	for {
		var ac *kafka.AdminClient
		if ac, err = kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3}); err == nil {
			if hw, err = ListEnds(ac, topic, partitions, kafka.IsolationLevelReadUncommitted); err == nil {
				if lso, err = ListEnds(ac, topic, partitions, kafka.IsolationLevelReadCommitted); err == nil {
					hw2, err2 := ListEnds(ac, topic, partitions, kafka.IsolationLevelReadUncommitted)
					if err2 == nil && len(lso) == partitions && maps.Equal(lso, hw) && maps.Equal(hw, hw2) {
						ac.Close()
						return hw
					}
				}
			}
			ac.Close()
		}
		require.True(tb, time.Now().Before(deadline), "transactions on %s still open after %s: last stable offsets %v, high watermarks %v (err %v)", topic, timeout, lso, hw, err)
		time.Sleep(200 * time.Millisecond)
	}
}

// Leaders returns the leader of each partition of topic.
func Leaders(ac *kafka.AdminClient, topic string) (map[int32]int32, error) {
	md, err := ac.GetMetadata(&topic, false, 10000)
	if err != nil {
		return nil, err
	}
	tm, ok := md.Topics[topic]
	if !ok || tm.Error.Code() != kafka.ErrNoError {
		return nil, fmt.Errorf("metadata of %s: %v", topic, tm.Error)
	}
	out := map[int32]int32{}
	for _, p := range tm.Partitions {
		out[p.ID] = p.Leader
	}
	return out, nil
}

// GroupCoordinator returns the broker coordinating group (-1 when unknown).
func GroupCoordinator(ac *kafka.AdminClient, group string) int32 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := ac.DescribeConsumerGroups(ctx, []string{group})
	if err != nil || len(res.ConsumerGroupDescriptions) != 1 {
		return -1
	}
	return int32(res.ConsumerGroupDescriptions[0].Coordinator.ID)
}

// NothingCommitted asserts that group has no committed offset on any partition of topic
// (a run that failed).
func NothingCommitted(tb testing.TB, brokers, group, topic string, partitions int) {
	tb.Helper()
	for p, o := range CommittedOffsets(tb, brokers, group, topic, partitions) {
		assert.Equal(tb, int64(kafka.OffsetInvalid), o, "partition %d committed though the run failed", p)
	}
}

// RunUntilCommitted runs run (a processor's Run) until the group's committed offsets on
// topic equal the topic's end offsets, then cancels it; run must return nil.
func RunUntilCommitted(tb testing.TB, run func(context.Context) error, brokers, group, topic string, partitions int) {
	tb.Helper()
	ends := EndOffsets(tb, brokers, topic, partitions)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx) }()
	var runErr error
	exited := false
	committed, ok := NewProbe(brokers, group, topic, partitions).WaitCommitted(tb, ends, 2*time.Minute, func() error {
		select {
		case runErr = <-errc:
			exited = true
			return fmt.Errorf("Run returned early: %v", runErr)
		default:
			return nil
		}
	})
	cancel()
	if !exited {
		select {
		case runErr = <-errc:
		case <-time.After(time.Minute):
			tb.Fatal("Run did not return within 1m of cancel")
		}
		assert.NoError(tb, runErr, "Run after cancel")
	}
	require.True(tb, ok, "committed offsets %v never reached end offsets %v", committed, ends)
}
