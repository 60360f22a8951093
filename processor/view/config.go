package view

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"

	"github.com/samsa-go/samsa/internal/kconf"
)

// Defaults of the Config fields.
const (
	DefaultMaxBytes     = 256 << 20
	DefaultLagInterval  = time.Second
	DefaultStartTimeout = 30 * time.Second
	DefaultWriteBatch   = 1000
)

// EntryOverhead is what the in-memory store counts for each entry besides its encoded
// key and value bytes: the map slot with its share of the spare capacity a Go map keeps
// after growing, and the allocator's rounding of the entry's one allocation (key and
// value share it). Measured with runtime heap figures on 64-bit Linux, rounded up.
const EntryOverhead = 96

// Config tunes a View. The zero value of each field means its default; Brokers is
// required.
type Config struct {
	// Brokers is the bootstrap server list, "host:port,host:port".
	Brokers string
	// Overrides are librdkafka properties for the View's connections: TLS, SASL,
	// client.id, socket settings. Only connection properties are used (a View reads with
	// its own consumer settings: no group, read_committed, from the start); the others
	// are ignored. The consumer properties a View owns are rejected.
	Overrides map[string]any

	// MaxBytes bounds the in-memory store: the encoded bytes of every key and value it
	// holds plus EntryOverhead per entry. Reaching it makes Run fail (wrapping
	// ErrMemoryBound) rather than evict anything: a view that silently forgot keys
	// would answer "absent" for keys that exist. Raise it, or keep the table in Redis.
	// Not used with Redis. Default: 256 MiB.
	MaxBytes int64

	// Redis, when set, keeps the table in Redis instead of in memory: the View writes
	// what it reads there (in pipelines of WriteBatch), and Get reads it back. The View
	// takes the client it is given and never closes it. Default: nil (in memory).
	Redis redis.UniversalClient
	// RedisPrefix namespaces the View's keys in Redis; required with Redis. The table is
	// spread over 64 hashes, RedisPrefix + "0" to RedisPrefix + "63". Run deletes them
	// when it starts, so that a key deleted while no View ran (its tombstone compacted
	// away since) does not linger: give every View its own prefix (one per node, for
	// example with the host name in it), never one another running View uses.
	RedisPrefix string
	// WriteBatch is the most updates written to Redis in one pipeline. Default: 1000.
	WriteBatch int

	// LagInterval is how often a ready View looks up the partitions' end offsets: how
	// old the figures of Lag and the samsa.view.lag metric may be, and how soon a
	// deleted topic stops Run. It does not pace the reading: records are read as they
	// are written.
	// Default: 1s.
	LagInterval time.Duration
	// StartTimeout bounds how long Run waits at start for the brokers to answer
	// (partitions and offsets of the topic). Default: 30s.
	StartTimeout time.Duration
}

// ownedKeys returns the consumer properties a View sets itself.
func ownedKeys() kconf.Owned {
	return kconf.Owned{
		"group.id":           "a View reads every partition without a consumer group",
		"enable.auto.commit": "a View commits nothing: it reads from the start every time",
		"isolation.level":    "a View reads read_committed, as the end offsets it waits for are",
		"auto.offset.reset":  "a View reads from each partition's start",
	}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Brokers == "" {
		errs = append(errs, errors.New("Brokers is required (host:port,host:port)"))
	}
	errs = append(errs, kconf.CheckOverrides(c.Overrides, ownedKeys(), "Overrides")...)
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxBytes is %d: want 0 (default, %d) or more", c.MaxBytes, DefaultMaxBytes))
	}
	if c.WriteBatch < 0 {
		errs = append(errs, fmt.Errorf("WriteBatch is %d: want 0 (default, %d) or more", c.WriteBatch, DefaultWriteBatch))
	}
	if c.LagInterval < 0 {
		errs = append(errs, fmt.Errorf("LagInterval is %s: want 0 (default, %s) or more", c.LagInterval, DefaultLagInterval))
	}
	if c.StartTimeout < 0 {
		errs = append(errs, fmt.Errorf("StartTimeout is %s: want 0 (default, %s) or more", c.StartTimeout, DefaultStartTimeout))
	}
	if c.Redis != nil && c.RedisPrefix == "" {
		errs = append(errs, errors.New("RedisPrefix is required with Redis: Run clears the View's keys when it starts, so give each View its own prefix (one per node)"))
	}
	if c.Redis == nil && c.RedisPrefix != "" {
		errs = append(errs, errors.New("RedisPrefix is set but Redis is nil: set Redis to keep the table in Redis"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("view: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.WriteBatch == 0 {
		c.WriteBatch = DefaultWriteBatch
	}
	if c.LagInterval == 0 {
		c.LagInterval = DefaultLagInterval
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	return c
}

// Option configures collaborators of a View.
type Option func(*options)

type options struct {
	log       *slog.Logger
	mp        metric.MeterProvider
	keyParser any // func(string) (K, error), checked by New
}

// WithLogger sets where the View logs (restore progress, skipped records, retried Redis
// writes). Default (or nil): discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithMeterProvider sets where metrics go. Default: the OTel global provider.
func WithMeterProvider(mp metric.MeterProvider) Option { return func(o *options) { o.mp = mp } }

// WithKeyParser sets how ServeHTTP turns the key query parameter into a K. K must be the
// View's key type, or New fails. Default: the key codec decodes the parameter's bytes
// (right for codec.String; a binary key codec such as codec.Int64 needs a parser, for
// example one built on strconv.ParseInt).
func WithKeyParser[K any](parse func(string) (K, error)) Option {
	return func(o *options) { o.keyParser = parse }
}
