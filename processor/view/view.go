package view

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/telemetry"
)

var (
	// ErrNotReady is returned by Get before the View is ready (see Ready).
	ErrNotReady = errors.New("view: not ready (still restoring)")
	// ErrClosed is returned by Get once Run has returned, and by Run when called again.
	ErrClosed = errors.New("view: closed")
	// ErrMemoryBound is wrapped by the error Run returns when the in-memory store would
	// grow past Config.MaxBytes.
	ErrMemoryBound = errors.New("view: memory bound reached")
)

// progressEvery is how often Run logs the restore's progress.
const progressEvery = 5 * time.Second

// View is a read-only replica of a topic, typically a compacted one: the last value of
// every key, restored from the start of every partition when Run starts and followed
// while it runs. Create it with New, run it once with Run, and look keys up with Get
// once Ready is closed.
type View[K, V any] struct {
	cfg    Config
	topic  string
	key    codec.Codec[K]
	value  codec.Decoder[V]
	parse  func(string) (K, error)
	log    *slog.Logger
	mp     metric.MeterProvider
	store  store
	ready  chan struct{}
	done   chan struct{} // closed when Run returns
	runErr error         // Run's error, set before done is closed
	state  atomic.Int32  // stateNew, stateRunning, stateReady, stateClosed
	start  time.Time     // when Run started

	mu    sync.Mutex // guards parts
	parts []partState
	index map[int32]int // partition number to its index in parts; set before Run reads

	skipped atomic.Int64
	skipCtr metric.Int64Counter
	attrs   metric.MeasurementOption
}

const (
	stateNew int32 = iota
	stateRunning
	stateReady
	stateClosed
)

// partState is one partition's reading position, under View.mu.
type partState struct {
	partition int32
	start     int64 // the partition's start offset when Run started
	target    int64 // its end offset when Run started: ready once pos reaches it
	end       int64 // the end offset last seen
	pos       int64 // the offset after the last record read
}

// New returns a View of topic, its keys decoded (and encoded, for lookups) with key and
// its values decoded with value. It validates cfg and connects nothing.
//
// A lookup finds a record by its key's bytes: Get encodes the key it is given and
// compares the bytes with the records' keys, so key must encode every key the way the
// topic's producers did (String, Bytes, Int64 and JSON of a struct do; JSON of a map
// sorts its keys, as encoding/json does).
func New[K, V any](cfg Config, topic string, key codec.Codec[K], value codec.Decoder[V], opts ...Option) (*View[K, V], error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if topic == "" {
		errs = append(errs, errors.New("view: topic is required"))
	}
	if key == nil || value == nil {
		errs = append(errs, errors.New("view: the key codec and the value decoder are required"))
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	v := &View[K, V]{cfg: cfg.withDefaults(), topic: topic, key: key, value: value, log: o.log, mp: o.mp,
		ready: make(chan struct{}), done: make(chan struct{})}
	switch p := o.keyParser.(type) {
	case nil:
		v.parse = func(s string) (K, error) { return key.Decode([]byte(s)) }
	case func(string) (K, error):
		v.parse = p
	default:
		errs = append(errs, fmt.Errorf("view: WithKeyParser got a %T, want a func(string) (%T, error): the View's key type", p, *new(K)))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	v.log = v.log.With("topic", topic)
	if v.mp == nil {
		v.mp = otel.GetMeterProvider()
	}
	if v.cfg.Redis != nil {
		v.store = newRedisStore(v.cfg.Redis, v.cfg.RedisPrefix)
	} else {
		v.store = newMemoryStore(topic, v.cfg.MaxBytes)
	}
	return v, nil
}

// Topic is the topic the View replicates.
func (v *View[K, V]) Topic() string { return v.topic }

// Ready is closed once every partition has been read up to the end offset it had when
// Run started (read_committed: its last stable offset). It is never closed when Run
// fails before that.
func (v *View[K, V]) Ready() <-chan struct{} { return v.ready }

// WaitReady waits until the View is ready (nil), Run has returned before it was (Run's
// error, or ErrClosed), or ctx ends (ctx's error).
func (v *View[K, V]) WaitReady(ctx context.Context) error {
	select {
	case <-v.ready:
		return nil
	case <-v.done:
		select {
		case <-v.ready:
			return nil
		default:
		}
		if v.runErr != nil {
			return v.runErr
		}
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("view: %q not ready: %w", v.topic, ctx.Err())
	}
}

// Get returns the last value of key: found is false when the topic has no record with
// that key, or its last one is a tombstone (or failed to decode: see the package doc).
// It fails with ErrNotReady before the View is ready, with ErrClosed once Run has
// returned, with the Redis store when Redis does, and when the key codec cannot encode
// key; nothing else (values were checked to decode when they were stored). Each call
// decodes the stored bytes, so every caller gets its own value.
func (v *View[K, V]) Get(key K) (value V, found bool, err error) {
	return v.GetContext(context.Background(), key)
}

// GetContext is Get with a context, which bounds a Redis lookup (the in-memory store
// does not look at it).
func (v *View[K, V]) GetContext(ctx context.Context, key K) (value V, found bool, err error) {
	switch v.state.Load() {
	case stateReady:
	case stateClosed:
		return value, false, ErrClosed
	default:
		return value, false, ErrNotReady
	}
	kb, err := v.key.Encode(key)
	if err != nil {
		return value, false, fmt.Errorf("view: %q: encode key: %w", v.topic, err)
	}
	b, found, err := v.store.get(ctx, kb)
	if err != nil || !found {
		return value, false, err
	}
	value, err = v.value.Decode(b)
	if err != nil {
		return value, false, fmt.Errorf("view: %q: decode value: %w", v.topic, err)
	}
	return value, true, nil
}

// Len is the number of keys the View holds.
func (v *View[K, V]) Len() int64 { return v.store.len() }

// Lag returns, per partition, how many offsets the View is behind the end offset it
// last saw (looked up every LagInterval): records written but not yet visible through
// Get. On a topic written in transactions, an idle partition shows the commit markers
// after its last record (one per transaction) until its next record. Before Run has
// looked up the partitions it is empty.
func (v *View[K, V]) Lag() map[int32]int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[int32]int64, len(v.parts))
	for _, p := range v.parts {
		out[p.partition] = max(p.end-p.pos, 0)
	}
	return out
}

// Progress is how far a View's restore has come, and what it holds.
type Progress struct {
	// Partitions is the topic's partition count; Restored how many of them were read up
	// to the end offset they had when Run started.
	Partitions, Restored int
	// Target is the number of offsets to read to be ready (end minus start offset, summed
	// over the partitions; a compacted topic has fewer records than that), Read the
	// number read so far (counted by position, up to Target).
	Target, Read int64
	// Keys and Bytes are what the store holds (Bytes as MaxBytes counts it; 0 for the
	// Redis store, whose memory is Redis's).
	Keys, Bytes int64
	// Skipped counts records passed over because their key or value did not decode, or
	// their key was null.
	Skipped int64
	// Ready reports that the restore is done.
	Ready bool
	// Elapsed is the time since Run started.
	Elapsed time.Duration
}

// Progress reports the restore's progress (for a log line or a readiness probe).
func (v *View[K, V]) Progress() Progress {
	v.mu.Lock()
	pr := Progress{Partitions: len(v.parts), Keys: v.store.len(), Bytes: v.store.bytes(), Skipped: v.skipped.Load()}
	for _, p := range v.parts {
		pr.Target += p.target - p.start
		pr.Read += min(max(p.pos-p.start, 0), p.target-p.start)
		if p.pos >= p.target {
			pr.Restored++
		}
	}
	start := v.start
	v.mu.Unlock()
	select {
	case <-v.ready:
		pr.Ready = true
	default:
	}
	if !start.IsZero() {
		pr.Elapsed = time.Since(start)
	}
	return pr
}

// Run restores the View from the start of every partition, closes Ready, and follows
// the topic until ctx ends; it then returns nil. It fails when the topic does not exist,
// the brokers refuse the client (authentication, authorization), a partition's
// position is no longer in the log (deleted by retention while the View was behind),
// the in-memory store reaches MaxBytes (ErrMemoryBound), or Redis refuses the
// View's writes for good (credentials, permissions). At start the brokers must answer
// within StartTimeout; later, brokers or Redis out of reach are waited for, the View
// serving what it has while its lag grows. Run is single-use; once it returns, Get
// fails with ErrClosed and the in-memory table is released.
func (v *View[K, V]) Run(ctx context.Context) (err error) {
	if !v.state.CompareAndSwap(stateNew, stateRunning) {
		return ErrClosed
	}
	defer func() {
		v.state.Store(stateClosed)
		v.store.close()
		if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			err = nil
		}
		v.runErr = err
		close(v.done)
	}()
	v.mu.Lock()
	v.start = time.Now()
	v.mu.Unlock()

	ac, err := admin.Dial(v.cfg.Brokers, v.cfg.Overrides, v.log)
	if err != nil {
		return fmt.Errorf("view: %q: %w", v.topic, err)
	}
	defer ac.Close()
	if err := v.setup(ctx, ac); err != nil {
		return err
	}
	unregister := v.instruments()
	defer unregister()

	if err := v.store.clear(ctx); err != nil {
		return fmt.Errorf("view: %q: clear the View's Redis hashes at start: %w", v.topic, err)
	}
	if err := v.restore(ctx); err != nil {
		return err
	}
	v.state.Store(stateReady)
	close(v.ready)
	pr := v.Progress()
	v.log.Info("view: ready", "partitions", pr.Partitions, "offsets", pr.Read, "keys", pr.Keys, "bytes", pr.Bytes,
		"skipped", pr.Skipped, "took", pr.Elapsed.Round(time.Millisecond))
	return v.follow(ctx, ac)
}

// setup looks up the topic's partitions and their start and end offsets.
func (v *View[K, V]) setup(ctx context.Context, ac *admin.Client) error {
	sctx, cancel := context.WithTimeout(ctx, v.cfg.StartTimeout)
	defer cancel()
	tps, err := ac.Partitions(sctx, v.topic)
	if err != nil {
		return fmt.Errorf("view: %q: %w", v.topic, err)
	}
	starts, err := ac.ListOffsets(sctx, tps, admin.Earliest)
	if err != nil {
		return fmt.Errorf("view: %q: start offsets: %w", v.topic, err)
	}
	ends, err := ac.ListOffsets(sctx, tps, admin.Latest)
	if err != nil {
		return fmt.Errorf("view: %q: end offsets: %w", v.topic, err)
	}
	parts := make([]partState, len(tps))
	index := make(map[int32]int, len(tps))
	for i, tp := range tps {
		parts[i] = partState{partition: tp.Partition, start: starts[tp], target: ends[tp], end: ends[tp], pos: starts[tp]}
		index[tp.Partition] = i
	}
	v.mu.Lock()
	v.parts, v.index = parts, index
	v.mu.Unlock()
	return nil
}

// instruments registers the View's metrics; the returned func unregisters them.
func (v *View[K, V]) instruments() func() {
	m := v.mp.Meter(telemetry.ScopeName)
	topic := semconv.MessagingDestinationName(v.topic)
	v.attrs = metric.WithAttributeSet(attribute.NewSet(semconv.MessagingSystemKafka, topic))
	v.skipCtr, _ = m.Int64Counter("samsa.view.records.skipped",
		metric.WithDescription("Records a view passed over: key or value did not decode, or null key."), metric.WithUnit("{record}"))
	lag, err1 := m.Int64ObservableGauge("samsa.view.lag",
		metric.WithDescription("Offsets a view is behind the end offset it last saw, per partition."), metric.WithUnit("{record}"))
	size, err2 := m.Int64ObservableGauge("samsa.view.bytes",
		metric.WithDescription("Bytes a view's in-memory store counts against its bound (encoded keys and values plus a per-entry overhead)."), metric.WithUnit("By"))
	keys, err3 := m.Int64ObservableGauge("samsa.view.keys",
		metric.WithDescription("Keys a view holds."), metric.WithUnit("{key}"))
	if err := errors.Join(err1, err2, err3); err != nil {
		return func() {}
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for p, l := range v.Lag() {
			o.ObserveInt64(lag, l, metric.WithAttributes(semconv.MessagingSystemKafka, topic,
				semconv.MessagingDestinationPartitionID(strconv.Itoa(int(p)))))
		}
		o.ObserveInt64(size, v.store.bytes(), v.attrs)
		o.ObserveInt64(keys, v.store.len(), v.attrs)
		return nil
	}, lag, size, keys)
	if err != nil {
		return func() {}
	}
	return func() { _ = reg.Unregister() }
}

// restore reads every partition from its start to the end it had when Run started,
// logging progress every few seconds.
func (v *View[K, V]) restore(ctx context.Context) error {
	var ranges []admin.Range
	v.mu.Lock()
	for _, p := range v.parts {
		ranges = append(ranges, admin.Range{TopicPartition: record.TopicPartition{Topic: v.topic, Partition: p.partition}, From: p.start, To: p.target})
	}
	v.mu.Unlock()
	pr := v.Progress()
	v.log.Info("view: restoring", "partitions", pr.Partitions, "offsets", pr.Target, "store", v.store.name())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				pr := v.Progress()
				v.log.Info("view: restoring", "offsets_read", pr.Read, "offsets", pr.Target, "partitions_done", pr.Restored,
					"partitions", pr.Partitions, "keys", pr.Keys, "bytes", pr.Bytes, "elapsed", pr.Elapsed.Round(time.Second))
			}
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
	}()
	return v.read(ctx, ranges)
}

// follow reads, from where the restore ended, everything written to the topic while
// ctx lasts, through one long-lived consumer, and looks the end offsets up every
// LagInterval for Lag (which also notices a deleted topic).
func (v *View[K, V]) follow(parent context.Context, ac *admin.Client) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	var ranges []admin.Range
	tps := make([]record.TopicPartition, 0, len(v.parts))
	v.mu.Lock()
	for _, p := range v.parts {
		tp := record.TopicPartition{Topic: v.topic, Partition: p.partition}
		tps = append(tps, tp)
		ranges = append(ranges, admin.Range{TopicPartition: tp, From: p.pos, To: math.MaxInt64})
	}
	v.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := v.watchEnds(ctx, ac, tps); err != nil {
			cancel(err)
		}
	})
	err := v.read(ctx, ranges)
	cancel(nil) // the cause stays the watcher's error if it failed first
	wg.Wait()
	if parent.Err() != nil {
		return nil
	}
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// watchEnds updates the partitions' end offsets every LagInterval until ctx ends. It
// fails when the topic is gone or the brokers refuse the client; brokers out of reach
// are waited for, the lag growing meanwhile.
func (v *View[K, V]) watchEnds(ctx context.Context, ac *admin.Client, tps []record.TopicPartition) error {
	t := time.NewTimer(v.cfg.LagInterval)
	defer t.Stop()
	failing := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		ends, err := v.listEnds(ctx, ac, tps)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, admin.ErrUnknownTopic) || errors.Is(err, admin.ErrAuthentication) {
				return fmt.Errorf("view: %q: %w", v.topic, err)
			}
			failing++
			v.log.Warn("view: end offsets", "err", err, "attempts", failing)
			t.Reset(min(v.cfg.LagInterval<<min(failing, 6), 5*time.Second))
			continue
		}
		failing = 0
		v.mu.Lock()
		for i := range v.parts {
			p := &v.parts[i]
			if end, ok := ends[record.TopicPartition{Topic: v.topic, Partition: p.partition}]; ok {
				p.end = max(p.end, end)
			}
		}
		v.mu.Unlock()
		t.Reset(v.cfg.LagInterval)
	}
}

// listEnds returns the end offsets of tps; when the lookup fails, it asks for the
// topic's partitions to tell a deleted topic (ErrUnknownTopic) from brokers away.
func (v *View[K, V]) listEnds(ctx context.Context, ac *admin.Client, tps []record.TopicPartition) (map[record.TopicPartition]int64, error) {
	lctx, cancel := context.WithTimeout(ctx, max(10*time.Second, 4*v.cfg.LagInterval))
	defer cancel()
	ends, err := ac.ListOffsets(lctx, tps, admin.Latest)
	if err == nil {
		return ends, nil
	}
	if _, perr := ac.PartitionCounts(lctx, []string{v.topic}); perr != nil {
		return nil, errors.Join(err, perr)
	}
	return nil, err
}

// read reads ranges and applies their records to the store. The consumer's goroutine
// (the caller's) decodes and queues the records; a writer goroutine applies what is
// queued, up to WriteBatch at a time, so a busy topic is written in large batches and
// a quiet one record by record, at once.
func (v *View[K, V]) read(ctx context.Context, ranges []admin.Range) error {
	if len(ranges) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	queue := make(chan op, 4*v.cfg.WriteBatch)
	var werr error
	var wg sync.WaitGroup
	wg.Go(func() {
		if werr = v.write(ctx, queue); werr != nil {
			cancel(werr)
		}
	})
	err := admin.Scan(ctx, v.cfg.Brokers, kconf.Map(v.cfg.Overrides), ranges, func(m record.Message) error {
		o := op{partition: m.Partition, offset: m.Offset, skip: !v.decodes(&m)}
		if !o.skip {
			o.key, o.value = m.Key, m.Value
		}
		select {
		case queue <- o:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	close(queue)
	wg.Wait()
	if errors.Is(werr, ErrMemoryBound) {
		return werr // it names the topic
	}
	if werr != nil {
		return fmt.Errorf("view: %q: %w", v.topic, werr)
	}
	if err != nil {
		return fmt.Errorf("view: %q: %w", v.topic, err)
	}
	// Every range was read to its end (the last offsets may be transaction markers or
	// compacted away, and have no record).
	v.mu.Lock()
	for _, r := range ranges {
		p := &v.parts[v.index[r.Partition]]
		p.pos = max(p.pos, r.To)
	}
	v.mu.Unlock()
	return nil
}

// write applies what queue brings until it is closed, in batches of what is queued.
// Positions advance once the records are applied: Lag and Progress never count a
// record that Get cannot see yet.
func (v *View[K, V]) write(ctx context.Context, queue <-chan op) error {
	batch := make([]op, 0, v.cfg.WriteBatch)
	for o := range queue {
		batch = append(batch[:0], o)
	fill:
		for len(batch) < v.cfg.WriteBatch {
			select {
			case o, ok := <-queue:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		if err := v.apply(ctx, batch); err != nil {
			return err // the caller cancels the reader's context, which unblocks its sends
		}
		v.mu.Lock()
		for i := range batch {
			p := &v.parts[v.index[batch[i].partition]]
			p.pos = max(p.pos, batch[i].offset+1)
		}
		v.mu.Unlock()
	}
	return nil
}

// decodes reports whether m's key and value decode; it logs and counts those that do
// not (a View has nowhere to dead-letter them).
func (v *View[K, V]) decodes(m *record.Message) bool {
	var reason string
	var err error
	switch {
	case m.Key == nil:
		reason = "null key"
	default:
		if _, err = v.key.Decode(m.Key); err != nil {
			reason = "key"
		} else if m.Value != nil {
			if _, err = v.value.Decode(m.Value); err != nil {
				reason = "value"
			}
		}
	}
	if reason == "" {
		return true
	}
	v.skipped.Add(1)
	if v.skipCtr != nil {
		v.skipCtr.Add(context.Background(), 1, v.attrs, metric.WithAttributes(attribute.String("samsa.view.skip_reason", reason)))
	}
	v.log.Warn("view: record skipped", "partition", m.Partition, "offset", m.Offset, "reason", reason, "err", err)
	return false
}

// apply writes a batch to the store. A memory store fails only at its bound; Redis
// writes are retried while Redis is away, and fail for good when it refuses them.
func (v *View[K, V]) apply(ctx context.Context, batch []op) error {
	for attempt := 0; ; attempt++ {
		err := v.store.apply(ctx, batch)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrMemoryBound) || permanent(err) || ctx.Err() != nil {
			return err
		}
		v.log.Warn("view: store write failed; retrying", "err", err, "attempts", attempt+1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(100*time.Millisecond<<min(attempt, 6), 5*time.Second)):
		}
	}
}
