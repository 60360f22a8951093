package samsatest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/processor/topics"
)

// Topic is a topic to create, with its partition count.
type Topic struct {
	Name       string
	Partitions int32
}

// Broker is an in-process Kafka-protocol broker (franz-go's kfake) on a free 127.0.0.1
// port: enough of Kafka for processors and distributed nodes to produce, consume,
// commit, run transactions and rebalance, started in milliseconds with nothing
// installed. It also injects the faults a real cluster makes hard to script: failed
// produce requests, a lost assignment, an outage.
//
// It is a fake. It keeps everything in memory, has one node, and answers some requests
// differently from Apache Kafka (timings, quotas, errors a real broker never returns).
// Test what matters to you on a real cluster too.
type Broker struct {
	b *embedded.Broker
	c *kfake.Cluster

	mu          sync.Mutex   // serializes Outage calls
	outageUntil atomic.Int64 // Unix nanoseconds; an outage's control answers until then
}

// StartBroker starts a broker with topics created. Close it when done.
func StartBroker(topics ...Topic) (*Broker, error) {
	et := make([]embedded.Topic, len(topics))
	for i, t := range topics {
		et[i] = embedded.Topic{Name: t.Name, Partitions: t.Partitions}
	}
	b, err := embedded.Start(et...)
	if err != nil {
		return nil, fmt.Errorf("samsatest: %w", err)
	}
	return &Broker{b: b, c: b.Cluster()}, nil
}

// NewBroker starts a broker with topics created and closes it when tb's test ends.
func NewBroker(tb testing.TB, topics ...Topic) *Broker {
	tb.Helper()
	b, err := StartBroker(topics...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	return b
}

// Addr is the broker's address, for Config.Brokers.
func (b *Broker) Addr() string { return b.b.Bootstrap() }

// Close stops the broker; what it stored is gone.
func (b *Broker) Close() {
	b.outageUntil.Store(0)
	b.b.Close()
}

// CreateTopic creates a topic with partitions partitions.
func (b *Broker) CreateTopic(name string, partitions int32) error {
	if name == "" || partitions < 1 {
		return fmt.Errorf("samsatest: topic %q with %d partitions: want a name and at least 1 partition", name, partitions)
	}
	if err := b.c.CreateTopic(name, partitions, nil); err != nil {
		return fmt.Errorf("samsatest: create topic %q: %w", name, err)
	}
	return nil
}

// DeleteTopic deletes a topic and its records.
func (b *Broker) DeleteTopic(name string) error {
	if err := b.c.DeleteTopic(name); err != nil {
		return fmt.Errorf("samsatest: delete topic %q: %w", name, err)
	}
	return nil
}

// EndOffsets returns, per partition of topic, the offset the next record will get (the
// high watermark). It fails for a topic the broker does not have.
func (b *Broker) EndOffsets(topic string) (map[int32]int64, error) {
	infos := b.c.PartitionInfos(topic)
	if infos == nil {
		return nil, fmt.Errorf("samsatest: topic %q does not exist", topic)
	}
	ends := make(map[int32]int64, len(infos))
	for _, pi := range infos {
		ends[pi.Partition] = pi.HighWatermark
	}
	return ends, nil
}

// Committed returns group's committed offset of every partition of topic it committed.
func (b *Broker) Committed(group, topic string) map[int32]int64 {
	out := map[int32]int64{}
	gi := b.c.GroupInfo(group)
	if gi == nil {
		return out
	}
	for p, c := range gi.Commits[topic] {
		out[p] = c.Offset
	}
	return out
}

// Assignment returns the group's current members (by client-side member id) and the
// partitions of topic each holds.
func (b *Broker) Assignment(group, topic string) map[string][]int32 {
	out := map[string][]int32{}
	gi := b.c.GroupInfo(group)
	if gi == nil {
		return out
	}
	for _, m := range gi.Members {
		out[m.MemberID] = append([]int32(nil), m.Assignment[topic]...)
	}
	return out
}

// WaitBalanced waits until group has members members and every one of topic's
// partitions is assigned, or ctx ends (also while the topic does not exist yet).
func (b *Broker) WaitBalanced(ctx context.Context, group, topic string, members int) error {
	infos := b.c.PartitionInfos(topic)
	for infos == nil { // a distributed node creates its topic as it starts
		select {
		case <-ctx.Done():
			return fmt.Errorf("samsatest: topic %q does not exist: %w", topic, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
		infos = b.c.PartitionInfos(topic)
	}
	want := len(infos)
	var last *kfake.GroupInfo
	_, err := b.c.WaitGroupInfo(ctx, group, func(gi *kfake.GroupInfo) bool {
		if gi == nil {
			return false // no group yet
		}
		last = gi
		if gi.State != "Stable" || len(gi.Members) != members {
			return false
		}
		n := 0
		for _, m := range gi.Members {
			n += len(m.Assignment[topic])
		}
		return n == want
	})
	if err != nil {
		state := "no group"
		if last != nil {
			state = fmt.Sprintf("state %s, %d members, %d partitions assigned", last.State, len(last.Members), last.NumAssigned())
		}
		return fmt.Errorf("samsatest: group %q not balanced over %d members and %d partitions of %q (%s): %w", group, members, want, topic, state, err)
	}
	return nil
}

// Fault is an injected fault: it answers matching requests until it has answered its
// count, or is removed.
type Fault struct{ h *kfake.FaultHandle }

// Wait waits until the fault has answered at least one request, or ctx ends.
func (f *Fault) Wait(ctx context.Context) error { return f.h.Wait(ctx, 1) }

// Hits is how many requests the fault has answered.
func (f *Fault) Hits() int { return f.h.Hits() }

// Remove ends the fault.
func (f *Fault) Remove() { f.h.Remove() }

// FailProduce makes the broker refuse the next requests produce requests that write to
// topic (-1: until removed). A retriable refusal (NOT_ENOUGH_REPLICAS, as when replicas
// are down) is retried by the producer itself, in order, and a processor never sees it;
// a non-retriable one (INVALID_RECORD) fails those records, and a processor's error
// policy sees outputs that were not acknowledged.
func (b *Broker) FailProduce(topic string, requests int, retriable bool) *Fault {
	if requests == 0 || requests < -1 {
		requests = 1
	}
	code := kerr.InvalidRecord
	if retriable {
		code = kerr.NotEnoughReplicas
	}
	return &Fault{b.c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: code, Count: requests})}
}

// LoseAssignment makes the group coordinator answer the next heartbeat of a member of
// group with UNKNOWN_MEMBER_ID, as it does for a member it timed out: that member loses
// its partitions without a revoke (it must not commit them any more) and joins again.
//
// The group settles again only once the coordinator drops the old membership, up to
// one SessionTimeout after the member's last heartbeat: most of a minute at processor's
// 45 s default, a few seconds with ProcessorConfig's 6 s.
func (b *Broker) LoseAssignment(group string) *Fault {
	return &Fault{b.c.Fault(kfake.Fault{
		Keys:  []kmsg.Key{kmsg.Heartbeat, kmsg.ConsumerGroupHeartbeat},
		Group: group, Err: kerr.UnknownMemberID, TopLevel: true, Count: 1,
	})}
}

// ProcessorConfig returns a processor.Config for a processor of group on b with the
// settings tests want: SessionTimeout 6 s and HeartbeatInterval 1 s (a member that is
// gone or lost its assignment is replaced within seconds, not after the 45 s default),
// BatchWait 5 ms and CommitInterval 100 ms (records flow and commits show at once).
// Set the rest (ErrorPolicy, BatchSize, ExactlyOnce) on the result.
func (b *Broker) ProcessorConfig(group string) processor.Config {
	return processor.Config{
		Membership: processor.Membership{Brokers: b.Addr(), SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: group,
		BatchWait: 5 * time.Millisecond, CommitInterval: 100 * time.Millisecond,
	}
}

// Outage makes the broker unreachable for d: every request in that time closes its
// connection unanswered, as a broker that went away does. Clients retry and reconnect
// once it ends. Outage returns at once; a second outage while one runs extends it.
func (b *Broker) Outage(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	until := time.Now().Add(d).UnixNano()
	if cur := b.outageUntil.Load(); cur > time.Now().UnixNano() {
		b.outageUntil.Store(max(cur, until)) // the running outage's control sees it
		return
	}
	b.outageUntil.Store(until)
	b.c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		if time.Now().UnixNano() >= b.outageUntil.Load() {
			b.c.DropControl()
			return nil, nil, false
		}
		b.c.KeepControl()
		return nil, errOutage, true
	})
}

var errOutage = errors.New("samsatest: broker outage")

// BrokersFromEnv is the zero-setup rule for tests that may run on a real cluster: with
// KAFKA_BROKERS set it returns that cluster, creating the topics that are missing there
// (the broker's default replication); otherwise it starts an in-process broker with the
// topics. stop releases what it started.
func BrokersFromEnv(ctx context.Context, want ...Topic) (brokers string, embedded bool, stop func(), err error) {
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		specs := make([]topics.Spec, len(want))
		for i, t := range want {
			specs[i] = topics.Spec{Name: t.Name, Partitions: int(t.Partitions)}
		}
		if err := topics.Create(ctx, env, nil, specs...); err != nil {
			return "", false, nil, err
		}
		return env, false, func() {}, nil
	}
	b, err := StartBroker(want...)
	if err != nil {
		return "", false, nil, errors.Join(err, errors.New("samsatest: set KAFKA_BROKERS to use a running cluster instead"))
	}
	return b.Addr(), true, b.Close, nil
}
