package processor

import (
	"context"
	"fmt"

	"github.com/samsa-go/samsa/codec"
)

// Either is the value of a record of a two-input join (NewJoin): a value of the left
// input's type A or of the right input's type B. Its zero value is a left one.
type Either[A, B any] struct {
	left    A
	right   B
	isRight bool
}

// Left returns the value and true when the record came from the left input.
func (e Either[A, B]) Left() (A, bool) { return e.left, !e.isRight }

// Right returns the value and true when the record came from the right input.
func (e Either[A, B]) Right() (B, bool) { return e.right, e.isRight }

// IsRight reports whether the record came from the right input.
func (e Either[A, B]) IsRight() bool { return e.isRight }

// NewJoin returns a processor over two co-partitioned inputs of different value types,
// for a partition-wise join (orders keyed by customer with the customers, say): partition
// p of both goes to one handler, whose records are Either values, each typed as its
// input decoded it. A batch holds the records of both inputs of the partition, in
// timestamp order across the two (offset order within each), as for any co-partitioned
// processor, so an update of the right input is handled before a later record of the
// left one. A tombstone's Either holds no value but tells its side (IsRight; Left or
// Right reports ok with the zero value, and the record's Tombstone is set). Everything
// else (delivery, error policy, Concurrency by key) is as for New; the handler is
// shared by all partitions and called concurrently for different ones, as with New.
// NewPartitionedJoin gives each partition a handler of its own:
//
//	p, err := processor.NewPartitionedJoin(cfg, orders, customers, func(int32) processor.Handler[string, processor.Either[Order, Customer]] {
//		known := map[string]Customer{} // this partition's customers (keep them in a state.Table to survive a restart)
//		return processor.HandlerFunc[string, processor.Either[Order, Customer]](
//			func(ctx context.Context, b *processor.Batch[string, processor.Either[Order, Customer]]) error {
//				for _, r := range b.Records {
//					if c, ok := r.Value.Right(); ok && r.Tombstone {
//						delete(known, r.Key) // a customer deleted
//					} else if ok {
//						known[r.Key] = c // a customer: remember it
//					} else if o, _ := r.Value.Left(); !r.Tombstone {
//						... // an order: enrich it with known[r.Key]
//					}
//				}
//				return nil
//			})
//	})
func NewJoin[K, A, B any](cfg Config, left Input[K, A], right Input[K, B], h Handler[K, Either[A, B]], opts ...Option) (*Processor[K, Either[A, B]], error) {
	if h == nil {
		return nil, fmt.Errorf("processor: nil handler")
	}
	return NewPartitionedJoin(cfg, left, right, func(int32) Handler[K, Either[A, B]] { return h }, opts...)
}

// NewPartitionedJoin is NewJoin with one handler per assigned partition, made by f (its
// state, the right input's values, say, then belongs to the partition).
func NewPartitionedJoin[K, A, B any](cfg Config, left Input[K, A], right Input[K, B], f Factory[K, Either[A, B]], opts ...Option) (*Processor[K, Either[A, B]], error) {
	inputs := []Input[K, Either[A, B]]{
		{Topic: left.Topic, Key: left.Key, Value: eitherDecoder[A, B]{left: left.Value}},
		{Topic: right.Topic, Key: right.Key, Value: eitherDecoder[A, B]{right: right.Value}},
	}
	if left.Value == nil {
		inputs[0].Value = nil // reported by NewPartitioned
	}
	if right.Value == nil {
		inputs[1].Value = nil
	}
	if f == nil {
		return NewPartitioned(cfg, inputs, nil, opts...)
	}
	rightTopic := right.Topic
	return NewPartitioned(cfg, inputs, func(partition int32) Handler[K, Either[A, B]] {
		h := f(partition)
		if h == nil {
			return nil
		}
		return joinHandler[K, A, B]{h: h, right: rightTopic}
	}, opts...)
}

// joinHandler tells a tombstone's side, which no decoder saw, by its topic.
type joinHandler[K, A, B any] struct {
	h     Handler[K, Either[A, B]]
	right string
}

func (j joinHandler[K, A, B]) Handle(ctx context.Context, b *Batch[K, Either[A, B]]) error {
	for i := range b.Records {
		if r := &b.Records[i]; r.Tombstone && r.Topic == j.right {
			r.Value.isRight = true
		}
	}
	return j.h.Handle(ctx, b)
}

// Close closes the factory's handler when it has a Close method, as for any handler.
func (j joinHandler[K, A, B]) Close() error {
	if c, ok := j.h.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

// eitherDecoder decodes one side of a join: exactly one of left and right is set.
type eitherDecoder[A, B any] struct {
	left  codec.Decoder[A]
	right codec.Decoder[B]
}

func (d eitherDecoder[A, B]) Decode(data []byte) (Either[A, B], error) {
	if d.right != nil {
		v, err := d.right.Decode(data)
		return Either[A, B]{right: v, isRight: true}, err
	}
	v, err := d.left.Decode(data)
	return Either[A, B]{left: v}, err
}
