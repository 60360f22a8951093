// Package member holds the vocabulary processor and distributed share with their users:
// the membership block both configs embed, the group protocols, the backoff, the panic
// sentinel and the config error. Each public package re-exports these under the same
// names (type aliases), so a field, a default's meaning or an error reads the same in
// both.
package member

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"time"
)

// Membership is how a client reaches the brokers and takes part in its consumer group:
// the block processor.Config and distributed.Config embed. The zero value of each field
// means its default, which each package documents where it differs.
type Membership struct {
	// Brokers is the bootstrap server list, "host:port,host:port". Required.
	Brokers string
	// Protocol is the group protocol. Default: Cooperative (a processor with several
	// inputs: Eager).
	Protocol Protocol
	// InstanceID enables static membership (group.instance.id): a member restarted within
	// SessionTimeout gets its assignment back without a rebalance. Default: dynamic.
	InstanceID string
	// SessionTimeout: a member not heard from for this long is removed from the group and
	// its assignment moves (classic protocols; with Consumer it is the broker's
	// group.consumer.session.timeout.ms). Default: processor 45s, distributed 10s.
	SessionTimeout time.Duration
	// HeartbeatInterval (classic protocols). Must be below SessionTimeout. Default:
	// processor 3s, distributed 1s.
	HeartbeatInterval time.Duration
	// MaxPollInterval bounds a rebalance: a member that has not completed its revoke
	// within it is removed. Default: 5m.
	MaxPollInterval time.Duration
	// StopTimeout bounds how long a revoke, or a stop, waits for the member's work on
	// what it gives up (a processor's in-flight batches, a distributed node's processes)
	// after telling it to stop. Must be below MaxPollInterval. Each package says what
	// happens to work still running then. Default: processor 20s, distributed 30s.
	StopTimeout time.Duration
	// Overrides are librdkafka properties for every client the member creates (TLS,
	// SASL, client.id). Keys the framework sets itself are refused, naming why.
	Overrides map[string]any
}

// Protocol selects how the group assigns work.
type Protocol string

const (
	// Cooperative: the classic group protocol with the cooperative-sticky assignor.
	// Rebalances move only what changes owner.
	Cooperative Protocol = "cooperative"
	// Eager: the classic protocol with the range assignor; every rebalance stops all of
	// every member's work first.
	Eager Protocol = "eager"
	// Consumer: the KIP-848 protocol (group.protocol=consumer; Kafka 4.0+ brokers). The
	// broker assigns, incrementally; session timeout and heartbeat are broker settings.
	Consumer Protocol = "consumer"
)

// Backoff is an exponential backoff with full jitter: the n-th wait (0-based) is a random
// duration in [0, min(Max, Initial·2ⁿ)].
type Backoff struct {
	// Initial is the first wait's upper bound. Default: 100ms.
	Initial time.Duration
	// Max caps the wait. Default: 10s (distributed's Supervise: 30s).
	Max time.Duration
}

// Wait returns the wait before attempt n (0-based; a negative n counts as 0).
func (b Backoff) Wait(n int) time.Duration {
	initial, ceiling := b.Initial, b.Max
	if initial <= 0 {
		initial = 100 * time.Millisecond
	}
	if ceiling <= 0 {
		ceiling = 10 * time.Second
	}
	d := initial
	for i := 0; i < n && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// Sleep waits Wait(n), or less when ctx ends first. It returns false at once when ctx has
// ended (before or during the wait), true after a full wait.
func (b Backoff) Sleep(ctx context.Context, n int) bool {
	if ctx.Err() != nil {
		return false
	}
	t := time.NewTimer(b.Wait(n))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ErrPanic is wrapped by the error a panic in user code becomes (a processor's handler,
// a distributed process): errors.Is(err, ErrPanic) tells a panic from a returned error.
// The error's text holds the panic value and the panicking goroutine's stack.
var ErrPanic = errors.New("panic")

// ConfigError lists every problem a config's validation found, each naming the field
// and the fix.
type ConfigError struct {
	// Pkg names the package whose config it is ("processor", "distributed").
	Pkg  string
	Errs []error
}

// Error reads "<Pkg>: invalid config:" followed by one problem per indented line.
func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.Pkg)
	b.WriteString(": invalid config:")
	for _, err := range e.Errs {
		b.WriteString("\n\t")
		b.WriteString(err.Error())
	}
	return b.String()
}

// Unwrap returns the problems, so errors.Is and errors.As reach each.
func (e *ConfigError) Unwrap() []error { return e.Errs }
