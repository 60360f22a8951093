package samsatest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
)

// KV is a key and a value, for Produce.
type KV[K, V any] struct {
	Key   K
	Value V
}

// Produce writes records to out's topic at brokers with a processor.Producer (so keys
// land where a processor's outputs of the same key would) and waits until every one is
// acknowledged, failing tb otherwise.
func Produce[K, V any](tb testing.TB, brokers string, out processor.Output[K, V], records ...KV[K, V]) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ProduceContext(ctx, brokers, out, records...); err != nil {
		tb.Fatal(err)
	}
}

// ProduceContext is Produce for code without a testing.TB (an example's main).
func ProduceContext[K, V any](ctx context.Context, brokers string, out processor.Output[K, V], records ...KV[K, V]) error {
	p, err := processor.NewProducer(processor.ProducerConfig{Brokers: brokers}, out)
	if err != nil {
		return err
	}
	defer p.Close()
	recs := make([]processor.ProducerRecord[K, V], len(records))
	for i, r := range records {
		recs[i] = processor.ProducerRecord[K, V]{Key: r.Key, Value: r.Value}
	}
	return p.SendMany(ctx, recs)
}

// ReadAll returns every record of topic at brokers, from each partition's start up to
// the end it has when ReadAll starts, decoded with key and value, in offset order per
// partition (partitions one after another). It reads committed records only, as
// processors' exactly-once outputs must be read, and fails when a record does not
// decode or ctx ends first.
func ReadAll[K, V any](ctx context.Context, brokers, topic string, key codec.Decoder[K], value codec.Decoder[V]) ([]processor.Record[K, V], error) {
	// Control records (transaction markers) are kept so that a partition whose last
	// offsets are markers is seen to reach its end; they are not returned.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return nil, fmt.Errorf("samsatest: read %q: %w", topic, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("samsatest: read %q: start offsets: %w", topic, err)
	}
	ends, err := adm.ListCommittedOffsets(ctx, topic) // read_committed: the last stable offsets
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("samsatest: read %q: end offsets: %w", topic, err)
	}
	want := map[int32]int64{}
	from := map[string]map[int32]kgo.Offset{topic: {}}
	for p, o := range ends[topic] {
		start := starts[topic][p].Offset
		if o.Offset > start {
			want[p] = o.Offset
			from[topic][p] = kgo.NewOffset().At(start)
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	cl.AddConsumePartitions(from)
	byPart := map[int32][]processor.Record[K, V]{}
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("samsatest: read %q: %d partitions not read to their end: %w", topic, len(want), err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				ferr = errors.Join(ferr, fmt.Errorf("%s[%d]: %w", t, p, err))
			}
		})
		if ferr != nil {
			return nil, fmt.Errorf("samsatest: read %q: %w", topic, ferr)
		}
		var derr error
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end || derr != nil {
				return
			}
			if !r.Attrs.IsControl() {
				rec, err := decodeRecord(r, key, value)
				if err != nil {
					derr = err
					return
				}
				byPart[r.Partition] = append(byPart[r.Partition], rec)
			}
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
		if derr != nil {
			return nil, fmt.Errorf("samsatest: read %q: %w", topic, derr)
		}
	}
	var out []processor.Record[K, V]
	for p := int32(0); len(byPart) > 0; p++ {
		out = append(out, byPart[p]...)
		delete(byPart, p)
	}
	return out, nil
}

func decodeRecord[K, V any](r *kgo.Record, key codec.Decoder[K], value codec.Decoder[V]) (processor.Record[K, V], error) {
	rec := processor.Record[K, V]{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp}
	var err error
	if r.Key == nil {
		rec.NullKey = true
	} else if rec.Key, err = key.Decode(r.Key); err != nil {
		return rec, fmt.Errorf("%s[%d]@%d: key: %w", r.Topic, r.Partition, r.Offset, err)
	}
	if r.Value == nil {
		rec.Tombstone = true
	} else if rec.Value, err = value.Decode(r.Value); err != nil {
		return rec, fmt.Errorf("%s[%d]@%d: value: %w", r.Topic, r.Partition, r.Offset, err)
	}
	for _, h := range r.Headers {
		rec.Headers = append(rec.Headers, processor.Header{Key: h.Key, Value: h.Value})
	}
	return rec, nil
}
