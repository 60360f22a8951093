// Package readback reads a topic back to the end it has when the read starts: what the
// test kit's ReadAll and the examples show their results with.
package readback

import (
	"context"
	"fmt"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/record"
)

// ReadAll returns every record of topic at brokers, from each partition's start up to
// the end it has when ReadAll starts, passed through decode, in offset order per
// partition (partitions one after another). It reads committed records only, as
// exactly-once outputs must be read, and fails when decode does or ctx ends first.
func ReadAll[T any](ctx context.Context, brokers, topic string, decode func(*record.Message) (T, error)) ([]T, error) {
	ac, err := admin.Dial(brokers, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", topic, err)
	}
	defer ac.Close()
	tps, err := ac.Partitions(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", topic, err)
	}
	starts, err := ac.ListOffsets(ctx, tps, admin.Earliest)
	if err != nil {
		return nil, fmt.Errorf("read %q: start offsets: %w", topic, err)
	}
	ends, err := ac.ListOffsets(ctx, tps, admin.Latest) // read_committed: the last stable offsets
	if err != nil {
		return nil, fmt.Errorf("read %q: end offsets: %w", topic, err)
	}
	ranges := make([]admin.Range, len(tps))
	for i, tp := range tps {
		ranges[i] = admin.Range{TopicPartition: tp, From: starts[tp], To: ends[tp]}
	}
	byPart := map[int32][]T{}
	err = admin.Scan(ctx, brokers, nil, ranges, func(m record.Message) error {
		v, err := decode(&m)
		if err != nil {
			return fmt.Errorf("%s[%d]@%d: %w", m.Topic, m.Partition, m.Offset, err)
		}
		byPart[m.Partition] = append(byPart[m.Partition], v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", topic, err)
	}
	var out []T
	for _, tp := range tps {
		out = append(out, byPart[tp.Partition]...)
	}
	return out, nil
}
