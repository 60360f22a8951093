// Package topics works with Kafka topics from outside a processor: Create makes the topics
// a processor reads and writes, with the partition counts co-partitioned inputs need, and a
// Producer writes typed records to a topic the way a processor's outputs are written, so
// a record lands where a processor's output of the same key would.
package topics

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/codes"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/telemetry"
	"github.com/samsa-go/samsa/processor"
)

// ProducerConfig configures a Producer.
type ProducerConfig struct {
	// Brokers is the bootstrap server list, "host:port,host:port".
	Brokers string
	// Overrides are librdkafka producer properties (TLS, SASL, linger.ms,
	// compression.type). The properties that make it idempotent and Kafka-partitioned
	// are the framework's and are rejected.
	Overrides map[string]any
	// CloseTimeout bounds how long Close waits for records still in flight. Default: 10s.
	CloseTimeout time.Duration
	// StartTimeout bounds the check NewProducer makes before it returns: that the brokers
	// answer and the topic exists. Past it NewProducer fails with an error naming the
	// addresses and what a connection to each of them says. Default: 30s.
	StartTimeout time.Duration
	// DeliveryTimeout bounds how long a record may wait for its acknowledgement, the
	// producer's retries included (librdkafka's message.timeout.ms): past it SendMany
	// fails naming the record, if its context has not ended first. librdkafka notices
	// the timeout up to several seconds late when the broker is gone (it scans for
	// timed-out records about once a second, and a request in flight waits for its own
	// timeout).
	// Default: 2m.
	DeliveryTimeout time.Duration
}

// Producer writes typed records to one topic from outside a processor: a service that
// feeds a processor's input, a backfill, a test. It produces the way outputs are
// produced, so a record lands where a processor's output of the same key would:
// idempotently (acks=all; retries make no duplicates, order per partition is kept) and
// partitioned by the murmur2 hash of the encoded key, as Kafka's Java clients do
// (librdkafka's own default, consistent_random, puts keys elsewhere, and a lookup of
// a state.Table by key would then miss). A null key spreads records over partitions.
//
// A Producer is safe for concurrent use. Close it when done.
type Producer[K, V any] struct {
	topic   string
	key     codec.Encoder[K] // nil: null keys
	value   codec.Encoder[V]
	prod    *produce.Producer
	tel     *telemetry.Telemetry
	timeout time.Duration
	once    sync.Once
}

// Option configures a Producer's collaborators.
type Option func(*options)

type options struct {
	logger *slog.Logger
	tp     trace.TracerProvider
	prop   propagation.TextMapPropagator
}

// WithLogger sets where librdkafka's log lines go. Default: discarded.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithTracerProvider sets where the send spans go. Default: the OTel global provider.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// WithPropagator sets how trace context is written to record headers. Default: W3C
// trace context (traceparent, tracestate).
func WithPropagator(p propagation.TextMapPropagator) Option { return func(o *options) { o.prop = p } }

// NewProducer returns a producer to out's topic, encoding with out's encoders. It checks,
// for up to StartTimeout, that the brokers answer and the topic exists.
func NewProducer[K, V any](cfg ProducerConfig, out processor.Output[K, V], opts ...Option) (*Producer[K, V], error) {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	key, value := out.Encoders()
	topic := out.Topic()
	var errs []error
	if cfg.Brokers == "" {
		errs = append(errs, errors.New("Brokers is required (host:port[,host:port...])"))
	}
	if topic == "" {
		errs = append(errs, errors.New("the output has no topic"))
	}
	if value == nil {
		errs = append(errs, fmt.Errorf("output %q was declared without a value encoder", topic))
	}
	overrides := kconf.Map(cfg.Overrides)
	errs = append(errs, kconf.CheckOverrides(overrides, produce.OwnedKeys(), "Overrides")...)
	if _, ok := overrides["partitioner"]; ok {
		errs = append(errs, errors.New(`Overrides: "partitioner" is owned by the framework: records are partitioned by murmur2, as outputs are`))
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"CloseTimeout", cfg.CloseTimeout}, {"StartTimeout", cfg.StartTimeout}, {"DeliveryTimeout", cfg.DeliveryTimeout}} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("%s = %s, must not be negative", f.name, f.d))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("topics: producer config: %w", errors.Join(errs...))
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if err := checkReachable(cfg.Brokers, overrides, o.logger, cmp.Or(cfg.StartTimeout, 30*time.Second), topic); err != nil {
		return nil, err
	}
	defaults := produce.Defaults()
	defaults["message.timeout.ms"] = int(cmp.Or(cfg.DeliveryTimeout, 2*time.Minute).Milliseconds())
	prod, err := produce.New(produce.Config{Brokers: cfg.Brokers, ClientID: kconf.ClientID("producer " + topic), Defaults: defaults, Overrides: overrides, Logger: o.logger})
	if err != nil {
		return nil, err
	}
	tel := telemetry.New(o.tp, noopmetric.NewMeterProvider(), o.prop)
	return &Producer[K, V]{topic: topic, key: key, value: value, prod: prod, tel: tel, timeout: cmp.Or(cfg.CloseTimeout, 10*time.Second)}, nil
}

// checkReachable asks the brokers, for up to timeout, whether topic exists: a producer to
// an unreachable cluster or a missing topic fails at once, naming what is wrong, instead
// of holding every record for its delivery timeout.
func checkReachable(brokers string, overrides kconf.Map, log *slog.Logger, timeout time.Duration, topic string) error {
	ac, err := admin.Dial(brokers, overrides, log)
	if err != nil {
		return fmt.Errorf("topics: producer: %w", err)
	}
	defer ac.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := ac.PartitionCounts(ctx, []string{topic}); err != nil {
		return fmt.Errorf("topics: producer: %w", err)
	}
	return nil
}

// Record is one record for Producer.SendMany.
type Record[K, V any] struct {
	Key   K
	Value V
	// NullKey sends a null key (Key is ignored); Tombstone a null value (Value is ignored).
	NullKey, Tombstone bool
	Headers            []processor.Header
	// Timestamp of the record; zero: now.
	Timestamp time.Time
}

// Send produces one record and waits for the broker's acknowledgement.
func (p *Producer[K, V]) Send(ctx context.Context, key K, value V, headers ...processor.Header) error {
	return p.SendMany(ctx, []Record[K, V]{{Key: key, Value: value, Headers: headers}})
}

// SendMany produces records in order and waits until every one is acknowledged or ctx
// ends. It returns the first failure, naming the topic and the record's index; records
// of one partition that were acknowledged stay written.
//
// Each call is a "send <topic>" span (kind producer), a child of ctx's span. When that
// span is sampled, every record carries its context (W3C traceparent header), so the
// processors that read the records continue the caller's trace.
func (p *Producer[K, V]) SendMany(ctx context.Context, records []Record[K, V]) (err error) {
	if len(records) == 0 {
		return nil
	}
	msgs := make([]record.Message, len(records))
	for i := range records {
		m, err := p.encode(&records[i])
		if err != nil {
			return fmt.Errorf("topics: producer: record %d to %q: %w", i, p.topic, err)
		}
		msgs[i] = m
	}
	_, span := p.tel.StartSend(ctx, p.topic, msgs)
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "send failed")
		}
		span.End()
	}()
	acks := &producerAcks{index: make(map[*record.Message]int, len(msgs)), done: make(chan struct{})}
	acks.remaining.Store(int64(len(msgs)))
	ptrs := record.Pointers(msgs)
	for i, m := range ptrs {
		acks.index[m] = i
	}
	p.prod.ProduceBatch(ctx, ptrs, acks)
	select {
	case <-acks.done:
	case <-ctx.Done():
		return fmt.Errorf("topics: producer: to %q: %d of %d records not acknowledged: %w", p.topic, acks.remaining.Load(), len(msgs), ctx.Err())
	}
	if acks.err != nil {
		return fmt.Errorf("topics: producer: record %d to %q: %w", acks.first, p.topic, acks.err)
	}
	return nil
}

func (p *Producer[K, V]) encode(r *Record[K, V]) (record.Message, error) {
	m := record.Message{Topic: p.topic, Partition: -1, Timestamp: r.Timestamp} // -1: partitioned by key
	if m.Timestamp.IsZero() {
		m.Timestamp = time.Now()
	}
	if !r.NullKey && p.key != nil {
		k, err := p.key.Encode(r.Key)
		if err != nil {
			return m, fmt.Errorf("key: %w", err)
		}
		m.Key = k
	}
	if !r.Tombstone {
		v, err := p.value.Encode(r.Value)
		if err != nil {
			return m, fmt.Errorf("value: %w", err)
		}
		if v == nil {
			v = []byte{}
		}
		m.Value = v
	}
	for _, h := range r.Headers {
		m.Headers = append(m.Headers, record.Header{Key: h.Key, Value: h.Value})
	}
	return m, nil
}

// Close waits for records in flight (up to ProducerConfig.CloseTimeout) and releases
// the producer. It is idempotent.
func (p *Producer[K, V]) Close() {
	p.once.Do(func() { p.prod.Close(p.timeout) })
}

type producerAcks struct {
	index     map[*record.Message]int // read-only once producing starts
	remaining atomic.Int64
	mu        sync.Mutex
	err       error
	first     int
	done      chan struct{}
}

func (a *producerAcks) Delivered(m *record.Message, err error) {
	if err != nil {
		a.mu.Lock()
		if i := a.index[m]; a.err == nil || i < a.first {
			a.err, a.first = err, i
		}
		a.mu.Unlock()
	}
	if a.remaining.Add(-1) == 0 {
		close(a.done)
	}
}

// Spec is a topic for Create.
type Spec struct {
	Name       string
	Partitions int
	// ReplicationFactor; 0: the broker's default.
	ReplicationFactor int
}

// Create creates every topic that does not exist yet, with its partition count
// and replication factor, and fails when an existing topic has another partition count
// (its keys would not land where the processor's partitions expect them). overrides are
// librdkafka properties for the admin connection (TLS, SASL).
func Create(ctx context.Context, brokers string, overrides map[string]any, specs ...Spec) error {
	for _, t := range specs {
		if t.Name == "" || t.Partitions < 1 || t.ReplicationFactor < 0 {
			return fmt.Errorf("topics: create topic %q: want a name, at least 1 partition and a replication factor ≥ 0, got %d partitions, rf %d", t.Name, t.Partitions, t.ReplicationFactor)
		}
	}
	c, err := admin.Dial(brokers, kconf.Map(overrides), nil)
	if err != nil {
		return fmt.Errorf("topics: create topics: %w", err)
	}
	defer c.Close()
	for _, t := range specs {
		rf := t.ReplicationFactor
		if rf == 0 {
			rf = -1
		}
		n, err := c.EnsureTopic(ctx, t.Name, t.Partitions, rf)
		if err != nil {
			return fmt.Errorf("topics: create topic %q: %w", t.Name, err)
		}
		if n != t.Partitions {
			return fmt.Errorf("topics: topic %q exists with %d partitions, want %d", t.Name, n, t.Partitions)
		}
	}
	return nil
}
