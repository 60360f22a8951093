package samsatest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/readback"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/processor/topics"
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
	p, err := topics.NewProducer(topics.ProducerConfig{Brokers: brokers}, out)
	if err != nil {
		return err
	}
	defer p.Close()
	recs := make([]topics.Record[K, V], len(records))
	for i, r := range records {
		recs[i] = topics.Record[K, V]{Key: r.Key, Value: r.Value}
	}
	return p.SendMany(ctx, recs)
}

// ReadAll returns every record of topic at brokers, from each partition's start up to
// the end it has when ReadAll starts, decoded with key and value, in offset order per
// partition (partitions one after another). It reads committed records only, as
// processors' exactly-once outputs must be read, and fails when a record does not
// decode or ctx ends first.
func ReadAll[K, V any](ctx context.Context, brokers, topic string, key codec.Decoder[K], value codec.Decoder[V]) ([]processor.Record[K, V], error) {
	recs, err := readback.ReadAll(ctx, brokers, topic, func(m *record.Message) (processor.Record[K, V], error) {
		return decodeRecord(m, key, value)
	})
	if err != nil {
		return nil, fmt.Errorf("samsatest: %w", err)
	}
	return recs, nil
}

func decodeRecord[K, V any](m *record.Message, key codec.Decoder[K], value codec.Decoder[V]) (processor.Record[K, V], error) {
	rec := processor.Record[K, V]{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Timestamp: m.Timestamp}
	var err error
	if m.Key == nil {
		rec.NullKey = true
	} else if rec.Key, err = key.Decode(m.Key); err != nil {
		return rec, fmt.Errorf("key: %w", err)
	}
	if m.Value == nil {
		rec.Tombstone = true
	} else if rec.Value, err = value.Decode(m.Value); err != nil {
		return rec, fmt.Errorf("value: %w", err)
	}
	for _, h := range m.Headers {
		rec.Headers = append(rec.Headers, processor.Header{Key: h.Key, Value: h.Value})
	}
	return rec, nil
}
