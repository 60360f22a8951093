// Package produce wraps an idempotent librdkafka producer (acks=all) whose delivery
// reports are routed to a per-message Ack. One goroutine drains the producer's event
// channel, as confluent-kafka-go requires; it ends when the producer is closed.
package produce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unsafe"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/record"
)

// OwnedKeys returns the producer properties the framework sets itself, each with why.
func OwnedKeys() kconf.Owned {
	return kconf.Owned{
		"bootstrap.servers":                     "set the brokers in the config",
		"enable.idempotence":                    "outputs are produced idempotently so broker retries create no duplicates",
		"acks":                                  "outputs are acknowledged by all in-sync replicas before inputs are committed",
		"max.in.flight.requests.per.connection": "bounded by idempotence",
		"go.delivery.reports":                   "delivery reports decide when inputs are committed",
		"go.delivery.report.fields":             "the framework trims delivery reports",
		"go.events.channel.enable":              "the framework drains producer events",
		"go.logs.channel.enable":                "librdkafka logs are forwarded to the injected slog.Logger",
		"transactional.id":                      "set the exactly-once mode in the config",
	}
}

// Defaults returns the producer settings an output and a standalone producer start from
// (Config.Defaults): records partitioned by the murmur2 hash of the key as Kafka's Java
// clients do, linger.ms 5. topic.metadata.propagation.max.ms is how long librdkafka keeps
// believing a topic it cannot find is about to appear (its default, 30 s, is for topics
// created a moment before): an output topic that does not exist fails its batch after 5
// s instead of 31, with an error naming the topic.
func Defaults() kconf.Map {
	return kconf.Map{
		"partitioner":                       "murmur2_random",
		"linger.ms":                         5,
		"topic.metadata.propagation.max.ms": 5000,
	}
}

// Config configures a Producer.
type Config struct {
	Brokers   string
	Defaults  kconf.Map
	Overrides kconf.Map
	Logger    *slog.Logger
	// ClientID is the default client.id (Overrides may set another); empty: librdkafka's.
	ClientID string
	// TransactionalID makes the producer transactional (exactly-once mode).
	TransactionalID string
	// TransactionTimeout is transaction.timeout.ms: how long the coordinator waits before
	// aborting a transaction of a producer that went silent.
	TransactionTimeout time.Duration
}

// Ack receives the outcome of one produced message, on the delivery goroutine. It must
// not block.
type Ack interface {
	Delivered(m *record.Message, err error)
}

// Producer produces records idempotently and reports each delivery to its Ack.
type Producer struct {
	p     *kafka.Producer
	txnID string // Config.TransactionalID, named in transactional errors
	log   *slog.Logger
	done  chan struct{} // deliveries returned
	logs  chan struct{} // log forwarding returned

	mu    sync.Mutex
	fatal error

	closeOnce sync.Once
}

// New creates the producer and starts its delivery goroutine.
func New(cfg Config) (*Producer, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	defaults := kconf.Map{
		"linger.ms": 5,
		"log_level": 6,
		// The client's Go channels: delivery reports wait in Events (drained at once by
		// the delivery goroutine; a full channel only makes the client's poller wait),
		// and ProduceChannel is never used. Their defaults, a million entries each, cost
		// 24 MiB, and a channel's ring touches every slot in turn, so Events' 16 MiB end
		// up resident.
		"go.events.channel.size":  10000,
		"go.produce.channel.size": 1,
	}
	if cfg.ClientID != "" {
		defaults["client.id"] = cfg.ClientID
	}
	for k, v := range cfg.Defaults {
		defaults[k] = v
	}
	owned := kconf.Map{
		"bootstrap.servers":                     cfg.Brokers,
		"enable.idempotence":                    true,
		"acks":                                  "all",
		"max.in.flight.requests.per.connection": 5,
		"go.delivery.reports":                   true,
		"go.delivery.report.fields":             "none",
		"go.logs.channel.enable":                true,
	}
	if cfg.TransactionalID != "" {
		owned["transactional.id"] = cfg.TransactionalID
		if cfg.TransactionTimeout > 0 {
			owned["transaction.timeout.ms"] = int(cfg.TransactionTimeout.Milliseconds())
		}
	}
	p, err := kafka.NewProducer(kconf.Build(defaults, cfg.Overrides, owned))
	if err != nil {
		return nil, fmt.Errorf("produce: create producer: %w", err)
	}
	pr := &Producer{p: p, txnID: cfg.TransactionalID, log: log, done: make(chan struct{}), logs: make(chan struct{})}
	go pr.deliveries()
	go func() {
		defer close(pr.logs)
		kconf.ForwardLogs(log, p.Logs())
	}()
	return pr, nil
}

func (p *Producer) deliveries() {
	defer close(p.done)
	for ev := range p.p.Events() {
		switch ev := ev.(type) {
		case *kafka.Message:
			m, _ := ev.Opaque.(*delivery)
			if m == nil {
				continue
			}
			err := ev.TopicPartition.Error
			if err != nil {
				p.mu.Lock()
				if p.fatal != nil {
					err = fmt.Errorf("%w: %w", ErrFatal, err)
				}
				p.mu.Unlock()
				err = fmt.Errorf("produce: to %s: %w", m.msg.Topic, err)
			}
			if err == nil {
				m.msg.Partition = ev.TopicPartition.Partition
				m.msg.Offset = int64(ev.TopicPartition.Offset)
			}
			m.ack.Delivered(m.msg, err)
		case kafka.Error:
			if ev.IsFatal() {
				p.mu.Lock()
				if p.fatal == nil {
					p.fatal = ev
				}
				p.mu.Unlock()
				p.log.Error("produce: fatal producer error; every later produce fails", "err", ev)
			} else {
				p.log.Warn("produce: producer error", "err", ev)
			}
		}
	}
}

type delivery struct {
	msg *record.Message
	ack Ack
}

// record.Header and kafka.Header must stay the same struct (this conversion compiles
// only while they are) for Produce to pass headers without copying them.
var _ = kafka.Header(record.Header{})

// RefusesRequest reports whether err is a broker's refusal of a whole produce request
// for what one of its records is (too large for the topic, or invalid): the request's
// other records failed with it through no fault of their own, and go through when
// produced apart.
func RefusesRequest(err error) bool {
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return false
	}
	switch ke.Code() {
	case kafka.ErrMsgSizeTooLarge, kafka.ErrRecordListTooLarge, kafka.ErrInvalidRecord:
		return true
	}
	return false
}

// RefusesTopic reports whether err is the broker (or librdkafka) refusing the record's
// topic itself: it does not exist, its name is invalid, or the client may not write to
// it. Every record to that topic fails alike, so no record is to blame.
func RefusesTopic(err error) bool {
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return false
	}
	switch ke.Code() {
	case kafka.ErrUnknownTopicOrPart, kafka.ErrUnknownTopic, kafka.ErrTopicException, kafka.ErrTopicAuthorizationFailed:
		return true
	}
	return false
}

// ErrFatal wraps the fatal error that made the producer unusable (for example a fenced
// idempotent producer); the owner must stop.
var ErrFatal = errors.New("produce: producer failed fatally")

// Produce enqueues m; ack is called with the delivery outcome. When librdkafka's queue is
// full it waits (bounded by ctx) instead of failing. m must not be modified until acked.
// A message the client refuses is reported by the returned error, not to ack.
func (p *Producer) Produce(ctx context.Context, m *record.Message, ack Ack) error {
	if err := p.fatalErr(); err != nil {
		return err
	}
	var km kafka.Message
	toClient(&km, m, &delivery{msg: m, ack: ack})
	return p.produce(ctx, &km, m.Topic)
}

func (p *Producer) fatalErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fatal != nil {
		return fmt.Errorf("%w: %w", ErrFatal, p.fatal)
	}
	return nil
}

// toClient fills km from m, with d as the opaque the delivery report brings back.
func toClient(km *kafka.Message, m *record.Message, d *delivery) {
	*km = kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &m.Topic, Partition: m.Partition},
		Key:            m.Key,
		Value:          m.Value,
		Timestamp:      m.Timestamp,
		Opaque:         d,
	}
	if len(m.Headers) > 0 {
		// The client copies headers into librdkafka during Produce and never writes
		// them: hand it the record's own slice (trace headers are shared by a batch's
		// outputs) instead of a converted copy per message.
		km.Headers = unsafe.Slice((*kafka.Header)(unsafe.Pointer(unsafe.SliceData(m.Headers))), len(m.Headers))
	}
}

// ProduceBatch enqueues msgs in order; ack is called once per message with its outcome, on the
// delivery goroutine, or at once for a message the client refuses (refused counts
// those). When librdkafka's queue is full it waits (bounded by ctx) instead of failing.
// No message may be modified until it is acked.
func (p *Producer) ProduceBatch(ctx context.Context, msgs []*record.Message, ack Ack) (refused int) {
	if err := p.fatalErr(); err != nil {
		for _, m := range msgs {
			ack.Delivered(m, err)
		}
		return len(msgs)
	}
	// One delivery record per batch and one client message reused for every call: the
	// client copies what it needs during Produce and keeps only the opaque.
	ds := make([]delivery, len(msgs))
	var km kafka.Message
	for i, m := range msgs {
		ds[i] = delivery{msg: m, ack: ack}
		toClient(&km, m, &ds[i])
		if err := p.produce(ctx, &km, m.Topic); err != nil {
			refused++
			ack.Delivered(m, err)
		}
	}
	return refused
}

func (p *Producer) produce(ctx context.Context, km *kafka.Message, topic string) error {
	var wait *time.Timer
	for {
		err := p.p.Produce(km, nil)
		if err == nil {
			return nil
		}
		var kerr kafka.Error
		if !errors.As(err, &kerr) || kerr.Code() != kafka.ErrQueueFull {
			return fmt.Errorf("produce: to %s: %w", topic, err)
		}
		if wait == nil {
			wait = time.NewTimer(time.Millisecond)
			defer wait.Stop()
		} else {
			wait.Reset(time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("produce: to %s: local queue full until %w", topic, ctx.Err())
		case <-wait.C:
		}
	}
}

// Abandon discards a producer that failed fatally: queued and in-flight messages are
// purged, so their acks are called with an error (ErrPurgeQueue, ErrPurgeInflight or the
// fatal error) instead of never, then the producer is closed.
func (p *Producer) Abandon(timeout time.Duration) {
	p.closeOnce.Do(func() {
		if err := p.p.Purge(kafka.PurgeQueue | kafka.PurgeInFlight); err != nil {
			p.log.Warn("produce: purge before close", "err", err)
		}
		if n := p.p.Flush(int(timeout.Milliseconds())); n > 0 {
			p.log.Warn("produce: abandoned producer closed with deliveries outstanding", "messages", n)
		}
		p.p.Close()
		<-p.done
		<-p.logs
	})
}

// AnyPartition lets the producer's partitioner choose (the hash of the key).
const AnyPartition = kafka.PartitionAny

// Close waits up to timeout for outstanding deliveries, then closes the producer. Acks of
// messages still outstanding are not called. It is idempotent.
func (p *Producer) Close(timeout time.Duration) (unflushed int) {
	p.closeOnce.Do(func() {
		unflushed = p.p.Flush(int(timeout.Milliseconds()))
		p.p.Close()
		<-p.done
		<-p.logs
	})
	return unflushed
}

// TxnError classifies a transactional error as librdkafka does.
type TxnError struct {
	Op        string
	Err       error
	Retriable bool // the operation may be retried as is
	Abortable bool // the transaction must be aborted; the producer stays usable
	Fatal     bool // the producer is unusable (fenced, or an unflagged error)
	// Fenced marks a fatal error of the fencing kind (a newer epoch of the transactional
	// id exists, or the coordinator no longer knows this producer's epoch, as after it
	// aborted a transaction that outlived transaction.timeout.ms). The producer is lost,
	// but a new one with the same transactional id can take over.
	Fenced bool
	// TransactionalID is the producer's transactional id ("" when unknown).
	TransactionalID string
	// Unauthorized marks TRANSACTIONAL_ID_AUTHORIZATION_FAILED: the client's principal
	// lacks the ACLs on its transactional id.
	Unauthorized bool
}

func (e *TxnError) Error() string {
	kind := "fatal"
	switch {
	case e.Retriable:
		kind = "retriable"
	case e.Abortable:
		kind = "abortable"
	}
	op := e.Op
	if e.TransactionalID != "" {
		op = fmt.Sprintf("%s of transactional id %q", e.Op, e.TransactionalID)
	}
	msg := fmt.Sprintf("produce: %s (%s): %v", op, kind, e.Err)
	if e.Unauthorized && e.TransactionalID != "" {
		msg += fmt.Sprintf(" (the client's principal needs WRITE and DESCRIBE on TransactionalId %q, through a literal or a prefixed ACL)", e.TransactionalID)
	}
	return msg
}

func (e *TxnError) Unwrap() error { return e.Err }

// fencing reports the fatal errors after which a new producer with the same
// transactional id can continue: the old epoch is gone, nothing else is wrong.
func fencing(code kafka.ErrorCode) bool {
	switch code {
	case kafka.ErrFenced, kafka.ErrProducerFenced, kafka.ErrInvalidProducerEpoch,
		kafka.ErrInvalidProducerIDMapping, kafka.ErrUnknownProducerID,
		kafka.ErrInvalidTxnState, kafka.ErrOutOfOrderSequenceNumber:
		return true
	}
	return false
}

func (p *Producer) classify(op string, err error) error {
	if err == nil {
		return nil
	}
	te := &TxnError{Op: op, Err: err, TransactionalID: p.txnID}
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		te.Unauthorized = kerr.Code() == kafka.ErrTransactionalIDAuthorizationFailed
		if ferr, ok := p.p.GetFatalError().(kafka.Error); ok && ferr.Code() == kafka.ErrTransactionalIDAuthorizationFailed {
			te.Unauthorized = true
		}
		switch {
		case kerr.IsFatal():
			te.Fatal = true
			te.Fenced = fencing(kerr.Code())
			if ferr := p.p.GetFatalError(); ferr != nil {
				if fk, ok := ferr.(kafka.Error); ok && fencing(fk.Code()) {
					te.Fenced = true
				}
			}
		case kerr.IsRetriable():
			te.Retriable = true
		case kerr.TxnRequiresAbort():
			te.Abortable = true
		default:
			te.Fatal = true // unflagged errors are treated as fatal, as librdkafka advises
		}
	} else {
		te.Fatal = true
	}
	return te
}

// InitTransactions registers the transactional id, fencing any earlier producer with it.
func (p *Producer) InitTransactions(ctx context.Context) error {
	return p.classify("init transactions", p.p.InitTransactions(ctx))
}

// TransactionalID is the producer's transactional id, empty for a plain producer.
func (p *Producer) TransactionalID() string { return p.txnID }

// BeginTransaction starts a transaction.
func (p *Producer) BeginTransaction() error {
	return p.classify("begin transaction", p.p.BeginTransaction())
}

// GroupMetadata is a consumer's group metadata, for SendOffsets.
type GroupMetadata = kafka.ConsumerGroupMetadata

// SendOffsets adds the consumer offsets (next offset to read) to the transaction.
func (p *Producer) SendOffsets(ctx context.Context, offsets []record.Offset, md *GroupMetadata) error {
	tps := make([]kafka.TopicPartition, len(offsets))
	for i := range offsets {
		tps[i] = kafka.TopicPartition{Topic: &offsets[i].Topic, Partition: offsets[i].Partition, Offset: kafka.Offset(offsets[i].Offset)}
		if offsets[i].Metadata != "" {
			tps[i].Metadata = &offsets[i].Metadata
		}
	}
	return p.classify("send offsets to transaction", p.p.SendOffsetsToTransaction(ctx, tps, md))
}

// CommitTransaction flushes and commits the transaction.
func (p *Producer) CommitTransaction(ctx context.Context) error {
	return p.classify("commit transaction", p.p.CommitTransaction(ctx))
}

// AbortTransaction aborts the transaction; its records are never visible to
// read_committed consumers.
func (p *Producer) AbortTransaction(ctx context.Context) error {
	return p.classify("abort transaction", p.p.AbortTransaction(ctx))
}
