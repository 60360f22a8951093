package processor

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/member"
	"github.com/samsa-go/samsa/internal/produce"
)

// Membership is how a processor reaches the brokers and takes part in its consumer
// group, the block Config embeds; distributed.Config embeds the same. In a processor,
// StopTimeout bounds how long a revoked partition (or a shutdown) waits for its in-flight
// batches: what is not acknowledged by then is not committed and is processed again by
// the next owner, so Run returns within StopTimeout + 5 s of its context ending, even with
// a handler that never returns (Run then fails naming its partitions); the default, 20s,
// keeps that under the 30 s an orchestrator usually grants between SIGTERM and SIGKILL.
// SessionTimeout's default, 45s, is kept well above the brokers'
// broker.session.timeout.ms (9 s by default): when a broker holding a replica of the
// group's __consumer_offsets partition crashes, the coordinator's heartbeat responses
// stall until the controller fences that broker, and a member whose session runs out
// meanwhile loses its partitions and processes its uncommitted batches again. With
// several inputs the default Protocol is Eager, because the range assignor gives
// partition p of every input to the same member (Consumer then requests the broker's range
// assignor). The default client.id is "<Group>@<host>/<pid>", so that a group's members
// (samsa status) tell processes apart.
type Membership = member.Membership

// Protocol selects how the group assigns partitions.
type Protocol = member.Protocol

// The group protocols.
const (
	Cooperative = member.Cooperative
	Eager       = member.Eager
	Consumer    = member.Consumer
)

// Config tunes a processor. The zero value of each field means its default. Brokers and
// Group are required.
type Config struct {
	// Membership: Brokers, Protocol, InstanceID, SessionTimeout, HeartbeatInterval,
	// MaxPollInterval, StopTimeout, Overrides.
	Membership
	// Group is the consumer group id; instances with the same Group share the partitions.
	Group string

	// Outputs names the topics the handlers send to. Run checks at start that each
	// exists, as it checks the inputs and the dead-letter topic, and fails naming those
	// missing (create them with topics.Create). Whether declared or not, an output topic
	// the broker refuses while running (deleted, not authorized) stops the processor
	// under every error policy: no record is to blame, so none is skipped or
	// dead-lettered for it. Default: none checked at start.
	Outputs []string

	// BatchSize is the most records handed to one Handle call. Default: 1000.
	BatchSize int
	// BatchWait is how long a partition waits, after its first buffered record, for the
	// batch to fill before handling what it has. Default: 50ms.
	BatchWait time.Duration
	// MaxInFlightBatches is how many batches of one partition may be waiting for their
	// outputs' acknowledgements while later batches are handled. 1 handles strictly one
	// batch at a time. With WithCheckpoint in at-least-once mode it is 1, and a larger
	// value is refused. Default: 8.
	MaxInFlightBatches int
	// Concurrency is how many Handle calls of one partition may run at once. 1 (the
	// default) hands a partition's batches to Handle one at a time. Above 1, each batch
	// is split by Ordering into units (a key's records, or single records) handled
	// concurrently: a partition then runs at up to Concurrency times the speed of a slow
	// handler (one that waits on a service, say) instead of needing more partitions.
	// Units of one key run one after the other in offset order, across batches too, and
	// each unit's outputs are produced as soon as it finishes, so a key whose handler is
	// slow or retrying holds back its own records, not the other keys'. The committed
	// offset never passes a record whose outputs are not acknowledged: a partition's
	// batches settle in order, up to MaxInFlightBatches at once, so a held key holds its
	// partition's commit and, once MaxInFlightBatches batches wait behind it, its intake.
	// The records done behind a record not yet settled (their outputs acknowledged, and
	// every earlier record of their key done) go into the commit's metadata, as many as
	// fit in 3000 bytes (a broker keeps up to offset.metadata.max.bytes, 4096 by
	// default; one set lower refuses those commits), so that a partition's next owner
	// skips them instead of handling them again. The metadata reaches the broker with
	// the commit on revoke and shutdown, and with the periodic commits when the offset
	// moves; after a crash, what the last commit recorded is skipped.
	// The error policy applies per unit (a unit's retries do not hold other keys; one
	// record of it can be dead-lettered), and a revoked partition drains its units as it
	// drains its batches.
	//
	// The records being handled count against MaxBufferedBytes as any others, so with
	// small records the budget may bound a partition's units in flight below
	// Concurrency (raise MaxBufferedBytes for more).
	//
	// With Concurrency above 1 the handler (the factory's handler of the partition) is
	// called from several goroutines at once and must be safe for that; a Batch holds
	// one unit. Not with ExactlyOnce or WithCheckpoint (New says why). Default: 1.
	Concurrency int
	// Ordering is what a partition keeps in order when Concurrency is above 1: ByKey
	// (the default), ByPartition (one batch at a time, as with Concurrency 1) or
	// Unordered.
	Ordering Ordering
	// MaxBufferedBytes is the instance's byte budget: it bounds the records it holds
	// (fetched and waiting for their handler, being handled, and in flight with their
	// outputs until those are acknowledged) and sizes librdkafka's prefetch queue (half
	// of it, at least 1 MiB). When the partitions hold the budget together, the
	// consumer stops polling until acknowledgements free some; a partition that stays at
	// its share for 100 ms (a handler slower than the fetch) is paused. See "Memory" in the package doc.
	// Default: 4 MiB, or 128 KiB per owned partition when that is more.
	MaxBufferedBytes int64

	// CommitInterval is how often acknowledged offsets are committed. Offsets are also
	// committed synchronously on revoke and shutdown. Default: 1s.
	CommitInterval time.Duration
	// StartTimeout bounds how long Run waits at start for the brokers to answer (the
	// topic checks); past it Run fails with an error naming the addresses and what a
	// connection to each of them says. Default: 30s.
	StartTimeout time.Duration
	// StartFromLatest starts partitions with no committed offset at the end instead of the
	// beginning. Default: false (earliest).
	StartFromLatest bool

	// ErrorPolicy decides what happens to failing records. Default: Stop().
	ErrorPolicy Policy

	// ExactlyOnce switches to the exactly-once mode: outputs (dead letters included) and
	// input offsets commit in one Kafka transaction every CommitInterval, inputs are read
	// read_committed, and an aborted transaction rewinds its partitions. Readers of the
	// outputs must use read_committed. Default: false (at-least-once).
	ExactlyOnce bool
	// TransactionalID of the instance's producer in exactly-once mode. Default: Group +
	// "-" + InstanceID with static membership (a restart fences its predecessor at once),
	// else Group + "-" + a random suffix (a crashed instance's open transaction is aborted
	// by the broker after TransactionTimeout).
	TransactionalID string
	// TransactionTimeout is transaction.timeout.ms in exactly-once mode. Default: 10s.
	TransactionTimeout time.Duration

	// ConsumerOverrides and ProducerOverrides are librdkafka properties for one client
	// only (tuning), on top of Overrides.
	ConsumerOverrides map[string]any
	ProducerOverrides map[string]any
}

// consumerDefaultsFor returns the consumer tuning defaults, chosen by absolute throughput
// and latency on a real broker (make bench). librdkafka's defaults wait up to 500 ms per
// fetch, and once its local queue holds queued.min.messages or queued.max.messages.kbytes
// it postpones every partition's next fetch by fetch.queue.backoff.ms (1 s): a consumer
// that keeps its queue near that mark fetches in bursts and idles in between. The engine
// moves records out of librdkafka's queue into its partitions' buffers at once
// (MaxBufferedBytes bounds those), so the queue is a short hand-off and a 10 ms backoff
// is all it needs. librdkafka's prefetch queue is sized from the budget: half of
// MaxBufferedBytes (at least 1 MiB, at most librdkafka's limit), so the records fetched
// ahead of the partitions' buffers grow with the budget instead of a fixed 32 MiB. With
// the default budget it is sized from 4 MiB, not from the per-partition growth.
func consumerDefaultsFor(budget int64) kconf.Map {
	return kconf.Map{
		"fetch.wait.max.ms":          10,
		"fetch.min.bytes":            1,
		"queued.min.messages":        100000,
		"queued.max.messages.kbytes": int(min(max(budget/2, 1<<20)>>10, maxQueuedKBytes)),
		"fetch.queue.backoff.ms":     10,
	}
}

// maxQueuedKBytes is the largest queued.max.messages.kbytes librdkafka accepts.
const maxQueuedKBytes = 2097151

// defaultBudgetPerPartition is how much the default MaxBufferedBytes grows per owned
// partition: with many partitions a fixed 4 MiB leaves each a few hundred records, too
// few for full batches, and the partitions wait on each other.
const defaultBudgetPerPartition = 128 << 10

func (c Config) withDefaults(inputs int) Config {
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.BatchWait == 0 {
		c.BatchWait = 50 * time.Millisecond
	}
	if c.MaxInFlightBatches == 0 {
		c.MaxInFlightBatches = 8
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.Ordering == "" {
		c.Ordering = ByKey
	}
	if c.MaxBufferedBytes == 0 {
		c.MaxBufferedBytes = group.DefaultBufferBytes
	}
	if c.Protocol == "" {
		c.Protocol = Cooperative
		if inputs > 1 {
			c.Protocol = Eager
		}
	}
	m := c.membership().WithDefaults()
	c.SessionTimeout, c.HeartbeatInterval, c.MaxPollInterval = m.SessionTimeout, m.HeartbeatInterval, m.MaxPollInterval
	if c.CommitInterval == 0 {
		c.CommitInterval = time.Second
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 20 * time.Second
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = 10 * time.Second
	}
	return c
}

// Validate reports every problem with c at once. Zero fields are valid (defaults).
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Brokers) == "" {
		errs = append(errs, errors.New("Brokers is required (host:port[,host:port...])"))
	}
	if strings.TrimSpace(c.Group) == "" {
		errs = append(errs, errors.New("Group is required"))
	}
	switch c.Ordering {
	case "", ByKey, ByPartition, Unordered:
	default:
		errs = append(errs, fmt.Errorf("Ordering = %q: use processor.ByKey, ByPartition or Unordered", c.Ordering))
	}
	if c.ExactlyOnce && c.Concurrency > 1 && c.Ordering != ByPartition {
		errs = append(errs, fmt.Errorf("Concurrency = %d with ExactlyOnce: not supported. A transaction commits the outputs it holds with the input offsets, which cannot pass a record still being handled; outputs of records handled after it would commit without their offsets and be produced again after a crash. Use at-least-once with Concurrency, or exactly-once with Concurrency 1", c.Concurrency))
	}
	for name, v := range map[string]int64{"BatchSize": int64(c.BatchSize), "MaxInFlightBatches": int64(c.MaxInFlightBatches), "MaxBufferedBytes": c.MaxBufferedBytes, "Concurrency": int64(c.Concurrency)} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s = %d, must not be negative", name, v))
		}
	}
	for name, v := range map[string]time.Duration{"BatchWait": c.BatchWait, "CommitInterval": c.CommitInterval, "StartTimeout": c.StartTimeout} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s = %s, must not be negative", name, v))
		}
	}
	for i, t := range c.Outputs {
		if strings.TrimSpace(t) == "" {
			errs = append(errs, fmt.Errorf("Outputs[%d] is empty", i))
		}
	}
	if _, err := group.ParseProtocol(string(c.Protocol)); err != nil {
		errs = append(errs, err)
	}
	stop := c.StopTimeout
	if stop == 0 {
		stop = c.withDefaults(1).StopTimeout
	}
	errs = append(errs, c.membership().Validate("StopTimeout", stop)...)
	if c.TransactionTimeout < 0 {
		errs = append(errs, fmt.Errorf("TransactionTimeout = %s, must not be negative", c.TransactionTimeout))
	}
	if !c.ExactlyOnce && (c.TransactionalID != "" || c.TransactionTimeout != 0) {
		errs = append(errs, errors.New("TransactionalID and TransactionTimeout apply only with ExactlyOnce"))
	}
	if c.ExactlyOnce {
		for _, k := range []string{"isolation.level"} {
			if _, ok := c.ConsumerOverrides[k]; ok {
				errs = append(errs, fmt.Errorf("ConsumerOverrides[%q]: exactly-once mode reads read_committed", k))
			}
			if _, ok := c.Overrides[k]; ok {
				errs = append(errs, fmt.Errorf("Overrides[%q]: exactly-once mode reads read_committed", k))
			}
		}
	}
	if err := c.ErrorPolicy.validate(); err != nil {
		errs = append(errs, err)
	}
	clientOwned := kconf.Owned{"bootstrap.servers": "set Brokers in the config"}
	errs = append(errs, kconf.CheckOverrides(c.Overrides, merge(group.OwnedKeys(), produce.OwnedKeys(), clientOwned), "Overrides")...)
	errs = append(errs, kconf.CheckOverrides(c.ConsumerOverrides, group.OwnedKeys(), "ConsumerOverrides")...)
	errs = append(errs, kconf.CheckOverrides(c.ProducerOverrides, produce.OwnedKeys(), "ProducerOverrides")...)
	if len(errs) == 0 {
		return nil
	}
	return &ConfigError{Pkg: "processor", Errs: errs}
}

// ConfigError lists every problem Validate found, each naming the field and the fix.
type ConfigError = member.ConfigError

func merge(ms ...kconf.Owned) kconf.Owned {
	out := kconf.Owned{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func toMap(m map[string]any) kconf.Map {
	out := make(kconf.Map, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// membership is c's part in the group, as the engine and its validation see it (a bad
// Protocol, reported by Validate, reads as Cooperative).
func (c Config) membership() group.Membership {
	m, _ := group.Of(c.Membership)
	return m
}
