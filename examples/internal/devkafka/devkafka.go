// Package devkafka gives samsa's examples their brokers without setup: the cluster in
// $KAFKA_BROKERS when it is set (creating the example's topics that are missing there,
// with the broker's default replication), else an in-process Kafka-protocol broker
// holding the topics, which lives as long as the example.
//
// It is the examples' own convenience, not a pattern for production: a production
// binary takes its brokers from its configuration, creates or checks its topics with
// topics.Create (or leaves that to its operators), and links neither this
// package nor the samsatest test kit.
package devkafka

import (
	"context"
	"errors"
	"os"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/internal/readback"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/processor/topics"
)

// Topic is a topic an example needs.
type Topic struct {
	Name       string
	Partitions int
}

// Brokers returns the bootstrap servers the example runs on and a stop function that
// releases what Brokers started (nothing, on $KAFKA_BROKERS).
func Brokers(ctx context.Context, want ...Topic) (brokers string, stop func(), err error) {
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		specs := make([]topics.Spec, len(want))
		for i, t := range want {
			specs[i] = topics.Spec{Name: t.Name, Partitions: t.Partitions}
		}
		if err := topics.Create(ctx, env, nil, specs...); err != nil {
			return "", nil, err
		}
		return env, func() {}, nil
	}
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	ts := make([]embedded.Topic, len(want))
	for i, t := range want {
		ts[i] = embedded.Topic{Name: t.Name, Partitions: int32(t.Partitions)}
	}
	b, err := embedded.Start(ts...)
	if err != nil {
		return "", nil, errors.Join(err, errors.New("set KAFKA_BROKERS to run on a running cluster instead"))
	}
	return b.Bootstrap(), b.Close, nil
}

// ReadAll returns every record of topic up to the end it has when ReadAll starts, key
// and value decoded (null ones left zero), in offset order per partition: how the
// examples show what they produced.
func ReadAll[K, V any](ctx context.Context, brokers, topic string, key codec.Decoder[K], value codec.Decoder[V]) ([]processor.Record[K, V], error) {
	return readback.ReadAll(ctx, brokers, topic, func(m *record.Message) (r processor.Record[K, V], err error) {
		r = processor.Record[K, V]{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Timestamp: m.Timestamp, NullKey: m.Key == nil, Tombstone: m.Value == nil}
		if !r.NullKey {
			r.Key, err = key.Decode(m.Key)
		}
		if err == nil && !r.Tombstone {
			r.Value, err = value.Decode(m.Value)
		}
		return r, err
	})
}
