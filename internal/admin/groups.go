package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/internal/record"
)

// ErrUnknownGroup is wrapped by DescribeGroup for a group the cluster does not know: no
// members and no committed offsets.
var ErrUnknownGroup = errors.New("consumer group does not exist")

// ErrGroupActive is wrapped by AlterOffsets when the group has live members: the broker
// refuses to move the offsets of a group that is consuming.
var ErrGroupActive = errors.New("consumer group has live members")

// Member is one live member of a consumer group.
type Member struct {
	ClientID   string
	ConsumerID string
	InstanceID string // static membership's group.instance.id; empty when dynamic
	Host       string
	Assignment []record.TopicPartition
}

// Group describes a consumer group as its coordinator sees it.
type Group struct {
	ID      string
	State   string // Stable, Empty, PreparingRebalance, CompletingRebalance, Dead, ...
	Type    string // Classic or Consumer (KIP-848)
	Members []Member
}

// DescribeGroup returns the group's state and members. A group that is Dead with no
// committed offsets (the broker keeps no record of it) fails with ErrUnknownGroup.
func (c *Client) DescribeGroup(ctx context.Context, group string) (Group, error) {
	start := time.Now()
	var d kafka.ConsumerGroupDescription
	for attempt := 0; ; attempt++ {
		res, err := c.ac.DescribeConsumerGroups(ctx, []string{group})
		if err == nil && len(res.ConsumerGroupDescriptions) != 1 {
			err = fmt.Errorf("%d descriptions returned", len(res.ConsumerGroupDescriptions))
		}
		if err == nil {
			d = res.ConsumerGroupDescriptions[0]
			if d.Error.Code() == kafka.ErrNoError || !d.Error.IsRetriable() {
				break
			}
			err = d.Error
		}
		// A coordinator that is moving or loading answers with a retriable error.
		var kerr kafka.Error
		if !errors.As(err, &kerr) || !kerr.IsRetriable() || !retryPause(ctx, attempt) {
			return Group{}, c.classify(ctx, start, fmt.Sprintf("describe group %q", group), err)
		}
	}
	if code := d.Error.Code(); code == kafka.ErrGroupIDNotFound {
		return Group{}, unknownGroup(group)
	} else if code != kafka.ErrNoError {
		return Group{}, fmt.Errorf("admin: describe group %q: %w", group, d.Error)
	}
	g := Group{ID: group, State: d.State.String(), Type: d.Type.String()}
	for _, m := range d.Members {
		mem := Member{ClientID: m.ClientID, ConsumerID: m.ConsumerID, InstanceID: m.GroupInstanceID, Host: m.Host}
		for _, tp := range m.Assignment.TopicPartitions {
			mem.Assignment = append(mem.Assignment, record.TopicPartition{Topic: *tp.Topic, Partition: tp.Partition})
		}
		slices.SortFunc(mem.Assignment, compareTP)
		g.Members = append(g.Members, mem)
	}
	slices.SortFunc(g.Members, func(a, b Member) int { return strings.Compare(a.ClientID+a.ConsumerID, b.ClientID+b.ConsumerID) })
	if d.State == kafka.ConsumerGroupStateDead && len(g.Members) == 0 {
		committed, err := c.Committed(ctx, group)
		if err != nil {
			return Group{}, err
		}
		if len(committed) == 0 {
			return Group{}, unknownGroup(group)
		}
	}
	return g, nil
}

func unknownGroup(group string) error {
	return fmt.Errorf("admin: %w: %q has no members and no committed offsets", ErrUnknownGroup, group)
}

// retryPause waits before retry attempt n of a retriable error; false when ctx ended.
func retryPause(ctx context.Context, n int) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Duration(min(n+1, 10)) * 100 * time.Millisecond):
		return true
	}
}

// Committed returns every offset the group has committed (the next offset to read, per
// partition). It asks through a consumer of the group that never joins it
// (rd_kafka_committed) for every partition of every topic the cluster has, not through
// the AdminClient's ListConsumerGroupOffsets: librdkafka's handling of that call's
// response dereferences the consumer-group handle an admin client does not have when the
// coordinator answers NOT_COORDINATOR or is still loading (librdkafka #5040), and the
// process dies with SIGSEGV, which a freshly started or restarted broker triggers.
func (c *Client) Committed(ctx context.Context, group string) (map[record.TopicPartition]int64, error) {
	start := time.Now()
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	md, err := c.ac.GetMetadata(nil, true, int(timeout.Milliseconds()))
	if err != nil {
		return nil, c.classify(ctx, start, fmt.Sprintf("committed offsets of group %q: topics", group), err)
	}
	var tps []kafka.TopicPartition
	for _, t := range md.Topics {
		if strings.HasPrefix(t.Topic, "__") || t.Error.Code() != kafka.ErrNoError {
			continue // internal topics hold no consumer offsets
		}
		for _, p := range t.Partitions {
			topic := t.Topic
			tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p.ID})
		}
	}
	out := map[record.TopicPartition]int64{}
	if len(tps) == 0 {
		return out, nil
	}
	cfg := kafka.ConfigMap{}
	for k, v := range c.conn {
		cfg[k] = v
	}
	cfg["group.id"] = group
	cfg["enable.auto.commit"] = false
	cons, err := kafka.NewConsumer(&cfg)
	if err != nil {
		return nil, fmt.Errorf("admin: committed offsets of group %q: %w", group, err)
	}
	defer cons.Close()
	for attempt := 0; ; attempt++ {
		left := 10 * time.Second
		if d, ok := ctx.Deadline(); ok {
			left = max(time.Until(d), time.Millisecond)
		}
		var res []kafka.TopicPartition
		res, err = cons.Committed(tps, int(left.Milliseconds()))
		if err == nil {
			for _, tp := range res {
				if tp.Error != nil {
					return nil, fmt.Errorf("admin: committed offset of group %q on %s[%d]: %w", group, *tp.Topic, tp.Partition, tp.Error)
				}
				if tp.Offset >= 0 {
					out[record.TopicPartition{Topic: *tp.Topic, Partition: tp.Partition}] = int64(tp.Offset)
				}
			}
			return out, nil
		}
		if !coordinatorBusy(err) || !retryPause(ctx, attempt) {
			return nil, c.classify(ctx, start, fmt.Sprintf("committed offsets of group %q", group), err)
		}
	}
}

// coordinatorBusy reports a retriable error, or a group coordinator that is moving,
// loading or not yet known (librdkafka does not flag those retriable here).
func coordinatorBusy(err error) bool {
	var kerr kafka.Error
	if !errors.As(err, &kerr) {
		return false
	}
	switch kerr.Code() {
	case kafka.ErrNotCoordinator, kafka.ErrCoordinatorLoadInProgress, kafka.ErrCoordinatorNotAvailable, kafka.ErrTimedOut:
		return true
	}
	return kerr.IsRetriable()
}

// AlterOffsets sets the group's committed offsets. The broker refuses while the group has
// members (ErrGroupActive), so a running consumer never has its position moved under it.
func (c *Client) AlterOffsets(ctx context.Context, group string, offsets []record.Offset) error {
	start := time.Now()
	tps := make([]kafka.TopicPartition, len(offsets))
	for i, o := range offsets {
		tps[i] = kafka.TopicPartition{Topic: &offsets[i].Topic, Partition: o.Partition, Offset: kafka.Offset(o.Offset)}
	}
	res, err := c.ac.AlterConsumerGroupOffsets(ctx, []kafka.ConsumerGroupTopicPartitions{{Group: group, Partitions: tps}})
	if err != nil {
		var kerr kafka.Error
		if errors.As(err, &kerr) && (kerr.Code() == kafka.ErrUnknownMemberID || kerr.Code() == kafka.ErrNonEmptyGroup) {
			return fmt.Errorf("admin: %w: %q (%v)", ErrGroupActive, group, err)
		}
		return c.classify(ctx, start, fmt.Sprintf("alter offsets of group %q", group), err)
	}
	var errs []error
	for _, g := range res.ConsumerGroupsTopicPartitions {
		for _, tp := range g.Partitions {
			if tp.Error == nil {
				continue
			}
			var kerr kafka.Error
			if errors.As(tp.Error, &kerr) && (kerr.Code() == kafka.ErrUnknownMemberID || kerr.Code() == kafka.ErrNonEmptyGroup) {
				return fmt.Errorf("admin: %w: %q (%v)", ErrGroupActive, group, tp.Error)
			}
			errs = append(errs, fmt.Errorf("admin: alter offset of group %q on %s[%d]: %w", group, *tp.Topic, tp.Partition, tp.Error))
		}
	}
	return errors.Join(errs...)
}

// Spec says which offset ListOffsets looks up.
type Spec int64

const (
	// Earliest is the log start offset.
	Earliest Spec = -2
	// Latest is the high watermark (the offset the next record will get).
	Latest Spec = -1
)

// AtTime is the offset of the first record whose timestamp is at or after t (Latest's
// offset when there is none).
func AtTime(t time.Time) Spec { return Spec(t.UnixMilli()) }

// ListOffsets looks up spec on every partition given.
func (c *Client) ListOffsets(ctx context.Context, tps []record.TopicPartition, spec Spec) (map[record.TopicPartition]int64, error) {
	req := make(map[kafka.TopicPartition]kafka.OffsetSpec, len(tps))
	for i := range tps {
		kspec := kafka.OffsetSpec(spec)
		switch spec {
		case Earliest:
			kspec = kafka.EarliestOffsetSpec
		case Latest:
			kspec = kafka.LatestOffsetSpec
		}
		req[kafka.TopicPartition{Topic: &tps[i].Topic, Partition: tps[i].Partition}] = kspec
	}
	out := make(map[record.TopicPartition]int64, len(tps))
	if len(tps) == 0 {
		return out, nil
	}
	start := time.Now()
	res, err := c.ac.ListOffsets(ctx, req, kafka.SetAdminIsolationLevel(kafka.IsolationLevelReadCommitted))
	if err != nil {
		return nil, c.classify(ctx, start, "list offsets", err)
	}
	var errs []error
	for tp, info := range res.ResultInfos {
		if info.Error.Code() != kafka.ErrNoError {
			errs = append(errs, fmt.Errorf("admin: offset of %s[%d]: %w", *tp.Topic, tp.Partition, info.Error))
			continue
		}
		out[record.TopicPartition{Topic: *tp.Topic, Partition: tp.Partition}] = int64(info.Offset)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if spec >= 0 {
		// No record at or after the time: the partition's end.
		var missing []record.TopicPartition
		for tp, off := range out {
			if off < 0 {
				missing = append(missing, tp)
			}
		}
		if len(missing) > 0 {
			ends, err := c.ListOffsets(ctx, missing, Latest)
			if err != nil {
				return nil, err
			}
			for tp, off := range ends {
				out[tp] = off
			}
		}
	}
	return out, nil
}

// Partitions returns the topic-partitions of topic, failing with ErrUnknownTopic.
func (c *Client) Partitions(ctx context.Context, topic string) ([]record.TopicPartition, error) {
	counts, err := c.PartitionCounts(ctx, []string{topic})
	if err != nil {
		return nil, err
	}
	out := make([]record.TopicPartition, counts[topic])
	for i := range out {
		out[i] = record.TopicPartition{Topic: topic, Partition: int32(i)}
	}
	return out, nil
}

// classify turns a client error into one naming the brokers when none answered.
func (c *Client) classify(ctx context.Context, start time.Time, what string, err error) error {
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		switch kerr.Code() {
		case kafka.ErrTimedOut, kafka.ErrTransport, kafka.ErrAllBrokersDown:
			return c.unreachable(time.Since(start), fmt.Errorf("%s: %w", what, err))
		}
	}
	if ctx.Err() != nil {
		return c.unreachable(time.Since(start), fmt.Errorf("%s: %w", what, err))
	}
	return fmt.Errorf("admin: %s: %w", what, err)
}

func compareTP(a, b record.TopicPartition) int {
	if c := strings.Compare(a.Topic, b.Topic); c != 0 {
		return c
	}
	return int(a.Partition) - int(b.Partition)
}
