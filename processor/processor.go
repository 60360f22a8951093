package processor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/telemetry"
)

// Handler handles one partition's batches, one call at a time (never concurrently for
// one partition, unless Config.Concurrency is above 1: then calls for different keys of
// the partition overlap; different partitions' handlers run in parallel). It sends outputs
// through b (Output.Send) and returns nil when the batch is done. A returned error or a
// panic is a failure handled by Config.ErrorPolicy; the batch may then be handled again,
// so side effects must tolerate repetition (at-least-once).
type Handler[K, V any] interface {
	Handle(ctx context.Context, b *Batch[K, V]) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc[K, V any] func(ctx context.Context, b *Batch[K, V]) error

// Handle calls f(ctx, b).
func (f HandlerFunc[K, V]) Handle(ctx context.Context, b *Batch[K, V]) error { return f(ctx, b) }

// Factory makes the handler of one partition when this instance is assigned it, so a
// handler may keep per-partition state (a partition-wise join's table). If the handler
// has a Close() error method it is called when the partition is revoked, after its last
// batch.
type Factory[K, V any] func(partition int32) Handler[K, V]

// Option configures collaborators of a processor.
type Option func(*options)

type options struct {
	logger     *slog.Logger
	checkpoint Checkpoint
	tp         trace.TracerProvider
	mp         metric.MeterProvider
	prop       propagation.TextMapPropagator
	recordKeys bool
	replay     *Replay
}

// WithTracerProvider sets where spans go. Default: the OTel global provider.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// WithMeterProvider sets where metrics go. Default: the OTel global provider.
func WithMeterProvider(mp metric.MeterProvider) Option { return func(o *options) { o.mp = mp } }

// WithPropagator sets how trace context is read from and written to record headers.
// Default: W3C trace context (traceparent, tracestate).
func WithPropagator(p propagation.TextMapPropagator) Option { return func(o *options) { o.prop = p } }

// WithTracedKeys records the message key (as a string) on the spans of single-record
// batches. Off by default: keys can be personal data.
func WithTracedKeys() Option { return func(o *options) { o.recordKeys = true } }

// Checkpoint is where a handler's effects record the input offsets they include, written
// atomically with the effects themselves (state.Table does this in Redis). With one, a
// partition's worker asks on every assignment which offsets are applied and skips those
// records: a batch replayed after a crash or a hand-off does not apply its effects twice.
type Checkpoint interface {
	// Applied returns the offset after the last applied record of topic's partition (0
	// when nothing is applied). It may be called concurrently for different partitions.
	// The processor retries a failed call until the partition is revoked (the store may
	// be down for a while), unless the error has a method Permanent() bool that returns
	// true (state.Error does when Redis refused the credentials or an ACL permission):
	// then Run fails with it. The first error in the chain with that method decides.
	Applied(ctx context.Context, topic string, partition int32) (next int64, err error)
}

// WithCheckpoint makes the processor skip records that c reports as applied, for
// exactly-once effects on a store: the handler writes its effects together with
// Batch.NextOffsets through the same store (see state.Table.Apply), passing its own
// context. When c is also a Recorder (state.Table is), commits record the applied
// offsets, and a store found behind them at assignment (it lost writes) makes Run fail
// with ErrCheckpointBehind rather than resume on it (in both delivery modes).
//
// A state.Table's Apply called with the handler's context is staged, not made, so
// updating state and sending outputs in one handler cannot lose outputs; reads through
// that context see what is staged. Pass the handler's context to the table.
//
// At-least-once: the processor makes a batch's staged effects once every output of the
// batch is acknowledged, then stores the batch's offsets. A batch whose outputs fail (a
// missing topic, a record the broker refuses, a crash before the acknowledgements)
// leaves no effects and is handled again, and a record found applied at assignment had
// its outputs acknowledged. A crash after the acknowledgements and before the effects
// are made sends the batch's outputs again (at-least-once), and applies its effects
// once. Under DeadLetter, a batch whose outputs failed is dead-lettered whole with its
// effects dropped, so redriving it applies each record once. Batches of a partition are
// handled one at a time (MaxInFlightBatches is 1), so each batch reads the state its
// predecessor left.
//
// Exactly-once (with a checkpoint that is a Recorder, as state.Table is): the effects of
// the batches in a transaction are made once the transaction (their outputs and
// offsets) commits, before the next one begins; later batches read the earlier ones'
// staged effects meanwhile. An aborted transaction (an output refused, a lost
// assignment, a crash before the commit) leaves no effects, and its records are handled
// again. An owner that stops between a commit and its effects (a crash; Redis out of
// reach for over a minute, which stops the processor) leaves them owed: the commit
// records the applied offset and the transaction's first input offset, and the
// partition's next owner reads the committed records from there again and handles
// them, making their effects and discarding their outputs (committed already). Like a
// retried batch, this expects a handler whose effects follow from the state and the
// records. A checkpoint that is not a Recorder has its effects made when the handler
// applies them: a transaction aborted after that leaves effects whose outputs are
// never sent.
func WithCheckpoint(c Checkpoint) Option { return func(o *options) { o.checkpoint = c } }

// WithLogger sets the logger for the processor and librdkafka's logs. Default (or nil):
// discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Processor consumes its inputs in a consumer group, hands each partition's batches to
// its handler, produces what the handler sent and commits the inputs once every output is
// acknowledged. Create it with New or NewPartitioned; Run it once.
type Processor[K, V any] struct {
	cfg     Config
	inputs  []Input[K, V]
	factory Factory[K, V]
	log     *slog.Logger
	cp      Checkpoint
	tel     *telemetry.Telemetry
	replay  *replayRun  // nil unless WithReplay
	outs    record.Pool // output slices of settled batches, shared by the partitions
	// budgetPerPartition raises the default MaxBufferedBytes per owned partition (0
	// when the user set MaxBufferedBytes).
	budgetPerPartition int64
	// staging holds each batch's checkpointed state effects back until its outputs are
	// acknowledged, or (exactly-once) committed (with a checkpoint; see internal/effect).
	staging bool

	mu       sync.Mutex
	ran      bool
	closed   bool
	cancel   context.CancelFunc
	finished chan struct{}
}

// New returns a processor that hands every partition's batches to h. h is shared by all
// partitions and called concurrently for different partitions.
func New[K, V any](cfg Config, inputs []Input[K, V], h Handler[K, V], opts ...Option) (*Processor[K, V], error) {
	if h == nil {
		return nil, errors.New("processor: nil handler")
	}
	return NewPartitioned(cfg, inputs, func(int32) Handler[K, V] { return h }, opts...)
}

// NewPartitioned returns a processor that makes one handler per assigned partition.
func NewPartitioned[K, V any](cfg Config, inputs []Input[K, V], f Factory[K, V], opts ...Option) (*Processor[K, V], error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err.(*ConfigError).Errs...)
	}
	if len(inputs) == 0 {
		errs = append(errs, errors.New("at least one Input is required"))
	}
	seen := map[string]bool{}
	for i, in := range inputs {
		if in.Topic == "" {
			errs = append(errs, fmt.Errorf("inputs[%d]: Topic is required", i))
		}
		if seen[in.Topic] {
			errs = append(errs, fmt.Errorf("inputs[%d]: topic %q is listed twice", i, in.Topic))
		}
		seen[in.Topic] = true
		if in.Key == nil || in.Value == nil {
			errs = append(errs, fmt.Errorf("inputs[%d] (%q): Key and Value decoders are required", i, in.Topic))
		}
	}
	if cfg.ErrorPolicy.final().kind == kindDeadLetter && seen[cfg.ErrorPolicy.final().topic] {
		errs = append(errs, fmt.Errorf("ErrorPolicy: dead-letter topic %q is also an input", cfg.ErrorPolicy.final().topic))
	}
	if len(inputs) > 1 && cfg.Protocol == Cooperative {
		errs = append(errs, fmt.Errorf("Protocol %q cannot keep %d co-partitioned inputs together (the cooperative-sticky assignor may give partition p of each topic to different members): use %q or %q", Cooperative, len(inputs), Eager, Consumer))
	}
	if f == nil {
		errs = append(errs, errors.New("nil handler factory"))
	}
	if len(errs) > 0 {
		return nil, &ConfigError{Errs: errs}
	}
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if err := o.replay.validate(); err != nil {
		return nil, &ConfigError{Errs: []error{err}}
	}
	// Exactly-once, effects are made after the commit, and owed ones found through the
	// applied offsets a Recorder puts in the commits (see catchUp): a checkpoint that is
	// not one has its effects made when the handler applies them.
	_, recorder := o.checkpoint.(Recorder)
	staging := o.checkpoint != nil && (!cfg.ExactlyOnce || recorder)
	if staging && !cfg.ExactlyOnce && cfg.MaxInFlightBatches > 1 {
		return nil, &ConfigError{Errs: []error{fmt.Errorf("MaxInFlightBatches = %d: with WithCheckpoint (at-least-once) a partition's batches are handled one at a time, so that each batch's state effects are made, after its outputs are acknowledged, before the next batch reads the state (leave it 0 or set 1)", cfg.MaxInFlightBatches)}}
	}
	if o.checkpoint != nil && cfg.Concurrency > 1 && cfg.Ordering != ByPartition {
		return nil, &ConfigError{Errs: []error{fmt.Errorf("Concurrency = %d with WithCheckpoint: not supported. The checkpoint records one applied offset per partition with each write, in order; units of a batch handled concurrently would apply out of order, and a unit applied after one with higher offsets would be taken for applied already. Use Concurrency 1 (or Ordering ByPartition) with a checkpoint", cfg.Concurrency)}}
	}
	tel := telemetry.New(o.tp, o.mp, o.prop)
	tel.RecordKeys = o.recordKeys
	var perPartition int64
	if cfg.MaxBufferedBytes == 0 {
		perPartition = defaultBudgetPerPartition
	}
	cfg = cfg.withDefaults(len(inputs))
	if staging && !cfg.ExactlyOnce {
		cfg.MaxInFlightBatches = 1
	}
	return &Processor[K, V]{
		budgetPerPartition: perPartition,
		staging:            staging,
		cfg:                cfg,
		inputs:             append([]Input[K, V](nil), inputs...),
		factory:            f,
		log:                o.logger,
		cp:                 o.checkpoint,
		tel:                tel,
		replay:             newReplayRun(o.replay),
		finished:           make(chan struct{}),
	}, nil
}

// Run processes until ctx is cancelled, Close is called, or a failure under the Stop
// policy. It checks at start that the inputs exist and are co-partitioned (and the
// dead-letter topic exists). On the way out it finishes in-flight batches (bounded by
// StopTimeout), commits their offsets and leaves the group; no goroutine it started
// outlives it. It returns nil after a clean stop, and is single-use.
func (p *Processor[K, V]) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.ran || p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.ran = true
	ctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	p.mu.Unlock()
	defer close(p.finished)
	defer cancel()

	topics := make([]string, len(p.inputs))
	for i, in := range p.inputs {
		topics[i] = in.Topic
	}
	if err := p.checkTopics(ctx, topics); err != nil {
		return err
	}
	endReplay, err := p.beginReplay(ctx, topics, cancel)
	if err != nil {
		return err
	}
	defer endReplay()

	out, err := p.newSink(ctx)
	if err != nil {
		return err
	}
	// The shutdown bound is paid once: the producer's close gets what is left of
	// StopTimeout + stopMargin after Run's context ended (at least a second to flush).
	var stopBy atomic.Int64
	stopWatch := context.AfterFunc(ctx, func() { stopBy.Store(time.Now().Add(p.cfg.StopTimeout + stopMargin).UnixNano()) })
	defer stopWatch()
	defer func() {
		bound := p.cfg.StopTimeout
		if at := stopBy.Load(); at != 0 {
			bound = max(time.Until(time.Unix(0, at)), time.Second)
		}
		out.close(bound)
	}()

	gcfg := group.Config{
		Brokers:           p.cfg.Brokers,
		GroupID:           p.cfg.Group,
		Topics:            topics,
		Protocol:          p.cfg.membership().Protocol,
		RemoteAssignor:    remoteAssignor(p.cfg.Protocol, len(topics)),
		InstanceID:        p.cfg.InstanceID,
		SessionTimeout:    p.cfg.SessionTimeout,
		HeartbeatInterval: p.cfg.HeartbeatInterval,
		MaxPollInterval:   p.cfg.MaxPollInterval,
		CommitInterval:    p.cfg.CommitInterval,
		TakeRecords:       p.cfg.BatchSize,
		BufferBytes:       p.cfg.MaxBufferedBytes,
		// The default budget grows with the partitions; one the user set is kept.
		BufferBytesPerSlot: p.budgetPerPartition,
		// The engine's own bound sits above the workers' drain, so a worker that honours
		// StopTimeout is never reported stuck.
		RevokeTimeout:   p.cfg.StopTimeout + stopMargin,
		StartFromLatest: p.cfg.StartFromLatest,
		Defaults:        consumerDefaultsFor(p.cfg.MaxBufferedBytes),
		Overrides:       mergeMaps(p.cfg.Overrides, p.cfg.ConsumerOverrides),
		Logger:          p.log,
		Hooks:           p.replay.hooks(p.rebalanceHooks()),
	}
	eng, err := out.open(gcfg, func(s *group.Slot) error { return p.runSlot(s, out) })
	if err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	// Lag is observed at collection time from the engine's cached watermarks, only while
	// this Run is active.
	if lag, err := p.tel.Meter().Int64ObservableGauge("samsa.consumer.lag",
		metric.WithDescription("Records after the next offset to process, per owned partition."), metric.WithUnit("{record}")); err == nil {
		reg, err := p.tel.Meter().RegisterCallback(func(_ context.Context, o metric.Observer) error {
			for _, l := range eng.Lag() {
				o.ObserveInt64(lag, l.Lag, metric.WithAttributes(semconv.MessagingConsumerGroupName(p.cfg.Group),
					semconv.MessagingDestinationName(l.Topic), semconv.MessagingDestinationPartitionID(strconv.Itoa(int(l.Partition)))))
			}
			return nil
		}, lag)
		if err == nil {
			defer reg.Unregister()
		}
	}
	p.log.Info("processor: starting", "group", p.cfg.Group, "inputs", topics, "policy", p.cfg.ErrorPolicy.String(),
		"exactly_once", p.cfg.ExactlyOnce, "consumer", kconf.Redacted(mergeMaps(p.cfg.Overrides, p.cfg.ConsumerOverrides)))
	out.start(ctx, cancel)
	watchCtx, stopInputWatch := context.WithCancel(ctx)
	watchErr := make(chan error, 1)
	go func() { watchErr <- p.watchInputs(watchCtx, topics, cancel) }()
	err = eng.Run(ctx)
	cancel()
	stopInputWatch()
	werr := <-watchErr
	if serr := out.wait(); serr != nil {
		return serr
	}
	if werr != nil {
		return werr
	}
	if err == nil {
		return p.replay.result()
	}
	return err
}

// inputCheckInterval is how often a running processor checks that its inputs exist.
const inputCheckInterval = 5 * time.Second

// watchInputs checks every inputCheckInterval that the input topics still exist. One
// deleted while the processor runs would otherwise go unnoticed (the consumer only logs
// that it is not available); instead it stops Run (through stop: in-flight batches are
// finished and committed as on any shutdown) and returns an error naming the topic. An
// unreachable cluster is not its business: the consumer rides that out.
func (p *Processor[K, V]) watchInputs(ctx context.Context, topics []string, stop context.CancelFunc) error {
	ac, err := admin.Dial(p.cfg.Brokers, toMap(p.cfg.Overrides), p.log)
	if err != nil {
		p.log.Warn("processor: cannot watch the input topics", "err", err)
		return nil
	}
	defer ac.Close()
	t := time.NewTicker(inputCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, inputCheckInterval)
		_, err := ac.PartitionCounts(cctx, topics)
		cancel()
		if errors.Is(err, admin.ErrUnknownTopic) && ctx.Err() == nil {
			p.log.Error("processor: an input topic was deleted; stopping", "group", p.cfg.Group, "err", err)
			stop()
			return fmt.Errorf("processor: input deleted while running: %w", err)
		}
	}
}

// newSink makes the sink of the configured delivery mode, with its producer.
func (p *Processor[K, V]) newSink(ctx context.Context) (sink, error) {
	pcfg := produce.Config{
		Brokers:   p.cfg.Brokers,
		ClientID:  kconf.ClientID(p.cfg.Group),
		Defaults:  produce.Defaults(),
		Overrides: mergeMaps(p.cfg.Overrides, p.cfg.ProducerOverrides),
		Logger:    p.log,
	}
	if p.replay.suppressesOutputs() {
		return discard{readCommitted: p.cfg.ExactlyOnce}, nil
	}
	if !p.cfg.ExactlyOnce {
		s, err := newAtLeastOnce(pcfg)
		if err != nil {
			return nil, fmt.Errorf("processor: %w", err)
		}
		return s, nil
	}
	pcfg.TransactionalID = p.transactionalID()
	pcfg.TransactionTimeout = p.cfg.TransactionTimeout
	return newExactlyOnce(ctx, pcfg, p.cfg, p.log)
}

func (p *Processor[K, V]) transactionalID() string {
	if p.cfg.TransactionalID != "" {
		return p.cfg.TransactionalID
	}
	if p.cfg.InstanceID != "" {
		return p.cfg.Group + "-" + p.cfg.InstanceID
	}
	var b [6]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%x", p.cfg.Group, b)
}

func (p *Processor[K, V]) rebalanceHooks() group.Hooks {
	count := func(event string, n int) {
		p.tel.Rebalances.Add(context.Background(), int64(n), metric.WithAttributes(
			semconv.MessagingConsumerGroupName(p.cfg.Group), attribute.String("samsa.rebalance.event", event)))
	}
	return group.Hooks{
		Assigned: func(slots []int32) { count("assigned", len(slots)) },
		Revoked: func(slots []int32, lost bool) {
			if lost {
				count("lost", len(slots))
			} else {
				count("revoked", len(slots))
			}
		},
	}
}

func remoteAssignor(p Protocol, inputs int) string {
	if p == Consumer && inputs > 1 {
		return "range"
	}
	return ""
}

func (p *Processor[K, V]) checkTopics(ctx context.Context, topics []string) error {
	ac, err := admin.Dial(p.cfg.Brokers, toMap(p.cfg.Overrides), p.log)
	if err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	defer ac.Close()
	cctx, cancel := context.WithTimeout(ctx, p.cfg.StartTimeout)
	defer cancel()
	counts, err := ac.PartitionCounts(cctx, topics)
	if err != nil {
		return fmt.Errorf("processor: inputs: %w", err)
	}
	if pol := p.cfg.ErrorPolicy.final(); pol.kind == kindDeadLetter {
		if _, err := ac.PartitionCounts(cctx, []string{pol.topic}); err != nil {
			return fmt.Errorf("processor: dead-letter topic: %w", err)
		}
	}
	if len(p.cfg.Outputs) > 0 {
		if _, err := ac.PartitionCounts(cctx, p.cfg.Outputs); err != nil {
			return fmt.Errorf("processor: outputs: %w", err)
		}
	}
	inputCounts := counts
	if err := admin.CheckCoPartitioned(inputCounts, topics); err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	return nil
}

// stopMargin is how long past StopTimeout a handler that ignores its cancelled context
// may run before Run gives up on it: Run returns within StopTimeout + stopMargin of its
// context ending.
const stopMargin = 5 * time.Second

// Close stops a running processor as cancelling Run's context would, and waits for Run
// to return (within StopTimeout + 5 s; Close gives up 10 s after that, which only a
// librdkafka call that never returns can cause). It is idempotent; after Close, Run
// returns ErrClosed.
func (p *Processor[K, V]) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ran, cancel := p.ran, p.cancel
	p.mu.Unlock()
	if !ran {
		return nil
	}
	cancel()
	select {
	case <-p.finished:
		return nil
	case <-time.After(p.cfg.StopTimeout + stopMargin + 10*time.Second):
		return errors.New("processor: Close timed out waiting for Run to return")
	}
}

func mergeMaps(ms ...map[string]any) kconf.Map {
	out := kconf.Map{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
