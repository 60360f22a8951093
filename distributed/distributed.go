package distributed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/group"
	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/member"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/telemetry"
)

// Process is one long-lived background process. It runs until ctx is cancelled (its slice
// moved to another node, or the node stops) and must then return promptly. Returning nil
// means done: it is not restarted (until its slice moves). Returning an error (or
// panicking) fails Run, unless the process is wrapped with Supervise.
type Process func(ctx context.Context) error

// Membership is how a node reaches the brokers and takes part in its group, the block
// Config embeds; processor.Config embeds the same. In a node, StopTimeout is how long a
// revoke (or a stop) waits for a slice's processes to return after their context is
// cancelled: a process still running then makes Run return an error naming it, and the
// node keeps holding its slices until the program exits, so that no other node starts a
// second instance meanwhile (see the package doc). SessionTimeout defaults to 10s and
// HeartbeatInterval to 1s (a dead node's slices should move in seconds), StopTimeout to
// 30s. The default client.id is "<process list name>@<host>/<pid>".
type Membership = member.Membership

// Protocol selects how the group assigns slices to nodes.
type Protocol = member.Protocol

// The group protocols.
const (
	Cooperative = member.Cooperative
	Eager       = member.Eager
	Consumer    = member.Consumer
)

// Backoff is an exponential backoff with full jitter: the n-th wait is a random duration
// in [0, min(Max, Initial·2ⁿ)]. processor.Backoff is the same type.
type Backoff = member.Backoff

// ConfigError lists every problem Validate found, each naming the field and the fix.
type ConfigError = member.ConfigError

// Config configures a Node. Zero values mean the defaults; Brokers is required.
type Config struct {
	// Membership: Brokers, Protocol, InstanceID, SessionTimeout, HeartbeatInterval,
	// MaxPollInterval, StopTimeout, Overrides.
	Membership
	// TopicPrefix names the technical topic of each Run: TopicPrefix + name. Default:
	// "samsa.distributed.".
	TopicPrefix string
	// Partitions is the slice count of a technical topic the node creates. An existing
	// topic keeps its partition count. Default: 8.
	Partitions int
	// ReplicationFactor of a created technical topic. Default: the broker's default.
	ReplicationFactor int
	// NodeID names this node in logs, claim records and process info. Default: host-pid.
	NodeID string

	// LivenessMargin: a node stops its processes once the group coordinator has not
	// answered for SessionTimeout minus LivenessMargin (heartbeats are answered every
	// HeartbeatInterval while all is well), so they have stopped by the time the broker's
	// session timeout hands their slices to another node, even after a GC pause or on a
	// starved CPU. If the coordinator answers again before the slices move, their
	// processes restart (same fencing token). With the Consumer protocol the session
	// timeout and heartbeat interval are the broker's (group.consumer.session.timeout.ms,
	// group.consumer.heartbeat.interval.ms): set SessionTimeout and HeartbeatInterval to
	// them for the margin to hold. SessionTimeout minus LivenessMargin must be at least two
	// HeartbeatIntervals. Negative turns the check off: the processes then stop when
	// librdkafka declares the assignment lost, at about the session timeout, and the
	// margin is whatever the hand-off leaves. Default: 3s.
	LivenessMargin time.Duration
}

func (c Config) withDefaults() Config {
	if c.TopicPrefix == "" {
		c.TopicPrefix = "samsa.distributed."
	}
	if c.Partitions == 0 {
		c.Partitions = 8
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	if c.NodeID == "" {
		c.NodeID = defaultNodeID()
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 30 * time.Second
	}
	if c.Protocol == "" {
		c.Protocol = Cooperative
	}
	if c.LivenessMargin == 0 {
		c.LivenessMargin = 3 * time.Second
	}
	m, _ := c.membership()
	c.SessionTimeout, c.HeartbeatInterval, c.MaxPollInterval = m.SessionTimeout, m.HeartbeatInterval, m.MaxPollInterval
	return c
}

// membershipDefaults are where distributed departs from the group defaults: a node that
// died should hand its slices over in seconds, not the better part of a minute.
var membershipDefaults = group.Membership{SessionTimeout: 10 * time.Second, HeartbeatInterval: time.Second}

// membership is c's group membership, defaults applied. The error is a bad Protocol name
// (then the protocol is Cooperative).
func (c Config) membership() (group.Membership, error) {
	m, err := group.Of(c.Membership)
	return m.Or(membershipDefaults).WithDefaults(), err
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Brokers) == "" {
		errs = append(errs, errors.New("Brokers is required"))
	}
	if c.Partitions < 0 {
		errs = append(errs, fmt.Errorf("Partitions = %d, must not be negative", c.Partitions))
	}
	m, err := c.membership()
	if err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, m.Validate("StopTimeout", c.withDefaults().StopTimeout)...)
	// The Consumer protocol's heartbeat interval is the broker's: not checked here.
	if d := c.withDefaults(); d.LivenessMargin > 0 && m.Protocol != group.Consumer && d.SessionTimeout-d.LivenessMargin < 2*d.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("LivenessMargin (%s) leaves SessionTimeout (%s) minus it below two HeartbeatIntervals (%s): a healthy node would stop its processes between heartbeats; lower LivenessMargin or HeartbeatInterval, or raise SessionTimeout",
			d.LivenessMargin, d.SessionTimeout, 2*d.HeartbeatInterval))
	}
	owned := kconf.Owned{}
	for k, v := range group.OwnedKeys() {
		owned[k] = v
	}
	for k, v := range produce.OwnedKeys() {
		owned[k] = v
	}
	errs = append(errs, kconf.CheckOverrides(c.Overrides, owned, "Overrides")...)
	if len(errs) == 0 {
		return nil
	}
	return &ConfigError{Pkg: "distributed", Errs: errs}
}

// Option configures a Node's collaborators.
type Option func(*options)

// options are the collaborators; a nil one means its default.
type options struct {
	logger *slog.Logger
	tp     trace.TracerProvider
	mp     metric.MeterProvider
	prop   propagation.TextMapPropagator
}

// WithLogger sets the node's logger (and librdkafka's). Default (or nil): discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithTracerProvider sets where hand-off spans go. Default (or nil): the OTel global
// provider.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// WithMeterProvider sets where metrics go. Default (or nil): the OTel global provider.
func WithMeterProvider(mp metric.MeterProvider) Option { return func(o *options) { o.mp = mp } }

// WithPropagator sets how trace context is written to and read from the headers of the
// claim and release records, which join a slice's stop on one node to its start on the
// next. Default: W3C trace context (traceparent, tracestate).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(o *options) { o.prop = p }
}

// Node is one member of the clusters of process lists it Runs. It is safe for
// concurrent use: Run may be called from several goroutines with different names.
type Node struct {
	cfg    Config
	member group.Membership
	log    *slog.Logger
	tel    *telemetry.Telemetry

	mu      sync.Mutex
	running map[string]bool
	engines sync.WaitGroup // engines still running (after ErrStuck, longer than Run)
}

// Wait blocks until every engine this node started has stopped, or ctx ends. After Run
// returned ErrStuck, its engine stops only once the stuck process returns; a program
// that can wait (tests) uses Wait, one that cannot should exit.
func (n *Node) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		n.engines.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// New validates cfg and returns a node. It connects nothing until Run.
func New(cfg Config, opts ...Option) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
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
	m, _ := cfg.membership() // valid: checked above
	return &Node{
		cfg:     cfg.withDefaults(),
		member:  m,
		log:     o.logger,
		tel:     telemetry.New(o.tp, o.mp, o.prop),
		running: map[string]bool{},
	}, nil
}

// ErrPanic is wrapped by the error a process's panic becomes (the panic value and the
// stack are in its text): errors.Is(err, ErrPanic) tells a panic from a returned error,
// in Run's *ProcessError and in SuperviseOptions.OnRestart. It is processor.ErrPanic too.
var ErrPanic = member.ErrPanic

// ErrStuck is wrapped by the error Run returns when a process did not return within
// StopTimeout after its context was cancelled. The node still holds the process's slice
// so that no other node starts a second instance: the program should exit.
var ErrStuck = errors.New("distributed: process did not stop within the stop timeout")

// Run runs processes as a cluster named name until ctx ends: it joins consumer group
// name on the technical topic TopicPrefix+name (created with Config.Partitions
// partitions if missing, one slice each), and runs process i on the node that owns slice
// i mod N, N the slice count. It blocks; it returns nil after ctx is cancelled and every process has returned; an
// error when a process fails (after stopping the others), when a process is stuck
// (ErrStuck), or when the group fails.
func (n *Node) Run(ctx context.Context, name string, processes []Process) error {
	if name == "" {
		return errors.New("distributed: Run needs a name")
	}
	if len(processes) == 0 {
		return fmt.Errorf("distributed: Run(%q) with no processes", name)
	}
	for i, p := range processes {
		if p == nil {
			return fmt.Errorf("distributed: Run(%q): process %d is nil", name, i)
		}
	}
	n.mu.Lock()
	if n.running[name] {
		n.mu.Unlock()
		return fmt.Errorf("distributed: %q is already running on this node", name)
	}
	n.running[name] = true
	n.mu.Unlock()
	// Released when the engine has really stopped, which after ErrStuck is later than
	// Run's return: until then the name stays taken and the producer and reader open.
	release := func() {
		n.mu.Lock()
		delete(n.running, name)
		n.mu.Unlock()
	}
	engineOwnsCleanup := false
	defer func() {
		if !engineOwnsCleanup {
			release()
		}
	}()

	topic := n.cfg.TopicPrefix + name
	partitions, err := n.ensureTopic(ctx, topic)
	if err != nil {
		return err
	}
	prod, err := produce.New(produce.Config{Brokers: n.cfg.Brokers, ClientID: kconf.ClientID(name), Overrides: toMap(n.cfg.Overrides), Logger: n.log})
	if err != nil {
		return fmt.Errorf("distributed: %w", err)
	}

	// One reader per Run, connected at the first slice start that needs it.
	reader := admin.NewReader(n.cfg.Brokers, toMap(n.cfg.Overrides))
	c := &cluster{node: n, name: name, topic: topic, partitions: partitions, processes: processes, prod: prod, reader: reader}
	var statsInterval time.Duration
	var statsHook func(string)
	if n.cfg.LivenessMargin > 0 {
		c.live = newLiveness(n.member.SessionTimeout-n.cfg.LivenessMargin, n.member.HeartbeatInterval, n.log.With("name", name, "node", n.cfg.NodeID))
		// A sample per heartbeat interval (at most one a second) tells when the
		// coordinator answers again; the stop itself runs off a timer.
		statsInterval = min(n.member.HeartbeatInterval, time.Second)
		statsHook = func(js string) { c.live.observe(js, time.Now()) }
	}
	stuck := make(chan error, 1)
	eng, err := group.New(group.Config{
		Brokers:           n.cfg.Brokers,
		GroupID:           name,
		Topics:            []string{topic},
		Protocol:          n.member.Protocol,
		InstanceID:        n.member.InstanceID,
		SessionTimeout:    n.member.SessionTimeout,
		HeartbeatInterval: n.member.HeartbeatInterval,
		MaxPollInterval:   n.member.MaxPollInterval,
		CommitInterval:    5 * time.Second,
		RevokeTimeout:     n.cfg.StopTimeout,
		PauseFetch:        true,
		HoldStuck:         true,
		StatsInterval:     statsInterval,
		Overrides:         toMap(n.cfg.Overrides),
		Logger:            n.log,
		Hooks: group.Hooks{
			Stuck: func(slots []int32, err error) {
				select {
				case stuck <- c.stuckError(slots, err):
				default:
				}
			},
			Stats: statsHook,
		},
	}, c.runSlice)
	if err != nil {
		if c.live != nil {
			c.live.stop()
		}
		prod.Close(5 * time.Second)
		reader.Close()
		return fmt.Errorf("distributed: %w", err)
	}
	n.log.Info("distributed: starting", "name", name, "topic", topic, "slices", partitions, "processes", len(processes), "node", n.cfg.NodeID)
	done := make(chan error, 1)
	engineOwnsCleanup = true
	n.engines.Add(1)
	go func() {
		defer n.engines.Done()
		err := eng.Run(ctx)
		if c.live != nil {
			c.live.stop()
		}
		prod.Close(5 * time.Second)
		reader.Close()
		release()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case err := <-stuck:
		// The engine stays inside the rebalance, holding the stuck slice, until the
		// process returns or the program exits; Run returns now so the caller can exit.
		return err
	}
}

func (n *Node) ensureTopic(ctx context.Context, topic string) (int, error) {
	ac, err := admin.Dial(n.cfg.Brokers, toMap(n.cfg.Overrides), n.log)
	if err != nil {
		return 0, fmt.Errorf("distributed: %w", err)
	}
	defer ac.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	count, err := ac.EnsureTopic(cctx, topic, n.cfg.Partitions, n.cfg.ReplicationFactor)
	if err != nil {
		return 0, fmt.Errorf("distributed: technical topic: %w", err)
	}
	return count, nil
}

func toMap(m map[string]any) kconf.Map {
	out := make(kconf.Map, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
