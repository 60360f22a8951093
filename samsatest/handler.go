package samsatest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
)

// HandlerDriver runs a processor's handler and error policy on records given in the
// test, with no broker: the same decoding, handler call, retries, narrowing of a failing
// batch to its failing records and dead letters as a running processor, on one
// partition. It is the unit test of a handler: no broker and no group.
//
// A driver is not safe for concurrent use. Batches are handled in the order given, each
// as the next batch of the partition (a Factory's handler keeps its state between them).
type HandlerDriver[K, V any] struct {
	inputs    []processor.Input[K, V]
	step      *processor.Step[K, V]
	partition int32
	next      map[string]int64
}

// NewHandlerDriver drives h, reading inputs, under policy (the zero Policy is Stop).
func NewHandlerDriver[K, V any](inputs []processor.Input[K, V], h processor.Handler[K, V], policy processor.Policy) (*HandlerDriver[K, V], error) {
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: "samsatest.invalid:9092"}, Group: "samsatest", ErrorPolicy: policy}, inputs, h)
	if err != nil {
		return nil, fmt.Errorf("samsatest: %w", err)
	}
	return DriveProcessor(p, inputs, 0)
}

// DriveProcessor drives the handler partition of p would get, with p's error policy
// and group: the processor your program builds, tested without a broker. inputs must be
// the inputs p was built with (the driver encodes test records with their codecs).
// p is not run.
func DriveProcessor[K, V any](p *processor.Processor[K, V], inputs []processor.Input[K, V], partition int32) (*HandlerDriver[K, V], error) {
	if p == nil {
		return nil, errors.New("samsatest: DriveProcessor: nil processor")
	}
	return &HandlerDriver[K, V]{inputs: inputs, step: p.Step(partition), partition: partition, next: map[string]int64{}}, nil
}

// Handle runs one batch of typed records: each is encoded with its input's key and value
// codecs (which must also be encoders, as the codec package's are), then decoded and
// handled as a processor would. A record's Topic "" is the first input's; Offset 0
// continues the topic's offsets; NullKey and Tombstone send nulls.
func (d *HandlerDriver[K, V]) Handle(ctx context.Context, records ...processor.Record[K, V]) (*Result, error) {
	raw := make([]processor.Message, len(records))
	for i, r := range records {
		in, err := d.input(r.Topic)
		if err != nil {
			return nil, err
		}
		raw[i] = processor.Message{Topic: in.Topic, Headers: r.Headers, Offset: r.Offset, Timestamp: r.Timestamp}
		if !r.NullKey {
			enc, ok := in.Key.(codec.Encoder[K])
			if !ok {
				return nil, fmt.Errorf("samsatest: input %q: key decoder %T cannot encode: use HandleRaw", in.Topic, in.Key)
			}
			if raw[i].Key, err = enc.Encode(r.Key); err != nil {
				return nil, fmt.Errorf("samsatest: record %d: encode key: %w", i, err)
			}
			if raw[i].Key == nil {
				raw[i].Key = []byte{}
			}
		}
		if !r.Tombstone {
			enc, ok := in.Value.(codec.Encoder[V])
			if !ok {
				return nil, fmt.Errorf("samsatest: input %q: value decoder %T cannot encode: use HandleRaw", in.Topic, in.Value)
			}
			if raw[i].Value, err = enc.Encode(r.Value); err != nil {
				return nil, fmt.Errorf("samsatest: record %d: encode value: %w", i, err)
			}
			if raw[i].Value == nil {
				raw[i].Value = []byte{}
			}
		}
	}
	return d.HandleRaw(ctx, raw...)
}

// HandleRaw runs one batch of raw records, to test what decoding does with bytes a
// producer got wrong. A record's Topic "" is the first input's; Offset 0 continues the
// topic's offsets; a zero Timestamp is now; Partition is the driver's (the one given is
// ignored). A nil Key or Value is null.
func (d *HandlerDriver[K, V]) HandleRaw(ctx context.Context, inputs ...processor.Message) (*Result, error) {
	msgs := make([]processor.Message, len(inputs))
	for i, in := range inputs {
		if in.Topic == "" {
			in.Topic = d.inputs[0].Topic
		}
		if _, err := d.input(in.Topic); err != nil {
			return nil, err
		}
		if in.Offset == 0 {
			in.Offset = d.next[in.Topic]
		}
		d.next[in.Topic] = in.Offset + 1
		if in.Timestamp.IsZero() {
			in.Timestamp = time.Now()
		}
		msgs[i] = processor.Message{Topic: in.Topic, Partition: d.partition, Offset: in.Offset, Key: in.Key, Value: in.Value, Headers: in.Headers, Timestamp: in.Timestamp}
	}
	outs, calls, err := d.step.Handle(ctx, msgs)
	res := &Result{Err: err, Calls: calls}
	dlq := d.step.DeadLetterTopic()
	for _, m := range outs {
		if dl, ok := deadLetter(dlq, m); ok {
			res.DeadLetters = append(res.DeadLetters, dl)
			continue
		}
		res.Sent = append(res.Sent, m)
	}
	return res, nil
}

func (d *HandlerDriver[K, V]) input(topic string) (*processor.Input[K, V], error) {
	if topic == "" {
		return &d.inputs[0], nil
	}
	for i := range d.inputs {
		if d.inputs[i].Topic == topic {
			return &d.inputs[i], nil
		}
	}
	return nil, fmt.Errorf("samsatest: %q is not an input of the driven processor", topic)
}

// DeadLetter is a record the error policy sent to the dead-letter topic: the original
// key, value and headers (Headers leaves out the samsa.dlq.* ones, decoded here).
type DeadLetter struct {
	processor.Message
	Stage  processor.Stage
	Error  string // the failure's message, as the samsa.dlq.error header carries it
	Source string // the record's input topic
	Offset int64  // and its offset there
}

// Result is what handling one batch did.
type Result struct {
	// Err is what would stop the processor (under Stop, a *processor.Error naming the
	// record, stage and cause; a handler panic matches processor.ErrPanic and
	// carries the stack), or nil. Nothing of the batch would be committed.
	Err error
	// Sent are the outputs the processor would produce, in order; DeadLetters what the
	// policy sent to the dead-letter topic.
	Sent        []processor.Message
	DeadLetters []DeadLetter
	// Calls counts handler invocations: retries, and one per record when a failing batch
	// is narrowed to its failing records.
	Calls int
}

// Panicked reports whether the batch stopped on a handler panic.
func (r *Result) Panicked() bool { return errors.Is(r.Err, processor.ErrPanic) }

// To returns the messages sent to topic.
func (r *Result) To(topic string) []processor.Message {
	var out []processor.Message
	for _, m := range r.Sent {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// Sent is one decoded output record.
type Sent[K, V any] struct {
	Key     K
	Value   V
	NullKey bool
	// Tombstone: the value was null (SendTombstone).
	Tombstone bool
	Headers   []processor.Header
}

// Outputs returns what r sent to out, decoded with out's own codecs (which must also be
// decoders, as the codec package's are).
func Outputs[K, V any](r *Result, out processor.Output[K, V]) ([]Sent[K, V], error) {
	ke, ve := out.Encoders()
	var kd codec.Decoder[K]
	if ke != nil {
		var ok bool
		if kd, ok = any(ke).(codec.Decoder[K]); !ok {
			return nil, fmt.Errorf("samsatest: output %q: key encoder %T cannot decode: decode Result.To(%q) yourself", out.Topic(), ke, out.Topic())
		}
	}
	vd, ok := any(ve).(codec.Decoder[V])
	if !ok {
		return nil, fmt.Errorf("samsatest: output %q: value encoder %T cannot decode: decode Result.To(%q) yourself", out.Topic(), ve, out.Topic())
	}
	var sent []Sent[K, V]
	for i, m := range r.To(out.Topic()) {
		s := Sent[K, V]{Headers: m.Headers}
		var err error
		if m.Key == nil || kd == nil {
			s.NullKey = m.Key == nil
		} else if s.Key, err = kd.Decode(m.Key); err != nil {
			return nil, fmt.Errorf("samsatest: output %q record %d: key: %w", out.Topic(), i, err)
		}
		if m.Value == nil {
			s.Tombstone = true
		} else if s.Value, err = vd.Decode(m.Value); err != nil {
			return nil, fmt.Errorf("samsatest: output %q record %d: value: %w", out.Topic(), i, err)
		}
		sent = append(sent, s)
	}
	return sent, nil
}

func deadLetter(dlq string, m processor.Message) (DeadLetter, bool) {
	if dlq == "" || m.Topic != dlq {
		return DeadLetter{}, false
	}
	dl := DeadLetter{Message: m}
	found := false
	var own []processor.Header
	for _, h := range m.Headers {
		switch h.Key {
		case processor.HeaderError:
			dl.Error, found = string(h.Value), true
		case processor.HeaderStage:
			dl.Stage = processor.Stage(h.Value)
		case processor.HeaderSourceOffset:
			dl.Offset, _ = strconv.ParseInt(string(h.Value), 10, 64)
		case processor.HeaderSourceTopic:
			dl.Source = string(h.Value)
		case processor.HeaderSourcePartition, processor.HeaderSourceTimestamp, processor.HeaderGroup:
		default:
			own = append(own, h)
		}
	}
	dl.Headers = own
	return dl, found
}
