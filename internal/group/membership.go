package group

import (
	"fmt"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/samsa-go/samsa/internal/member"
)

// The vocabulary processor and distributed share about taking part in a group: the
// membership settings with their defaults and validation, the protocol names, the retry
// backoff and the panic guard around user code. Both public packages keep their own
// exported Config fields and Protocol constants and convert through these, so a default,
// a name or an error message is written once.

// Default membership settings. A package whose members should react faster passes its own
// through Membership.Or before WithDefaults.
const (
	DefaultSessionTimeout    = 45 * time.Second
	DefaultHeartbeatInterval = 3 * time.Second
	DefaultMaxPollInterval   = 5 * time.Minute
)

// Membership is how a member takes part in its group. The zero value of each duration
// means its default; the zero Protocol is Cooperative.
type Membership struct {
	Protocol Protocol
	// InstanceID enables static membership (group.instance.id); empty for dynamic.
	InstanceID string
	// SessionTimeout and HeartbeatInterval apply to the classic protocols only; with
	// Consumer (KIP-848) they are broker settings.
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	// MaxPollInterval bounds a rebalance: a member whose revoke outlasts it is removed.
	MaxPollInterval time.Duration
}

// WithDefaults returns m with each zero duration set to its default
// (DefaultSessionTimeout, DefaultHeartbeatInterval, DefaultMaxPollInterval).
func (m Membership) WithDefaults() Membership {
	return m.Or(Membership{
		SessionTimeout:    DefaultSessionTimeout,
		HeartbeatInterval: DefaultHeartbeatInterval,
		MaxPollInterval:   DefaultMaxPollInterval,
	})
}

// Or returns m with each zero duration, and an empty InstanceID, taken from d. The
// Protocol is m's: its zero value is a choice (Cooperative), not an absence.
func (m Membership) Or(d Membership) Membership {
	if m.InstanceID == "" {
		m.InstanceID = d.InstanceID
	}
	if m.SessionTimeout == 0 {
		m.SessionTimeout = d.SessionTimeout
	}
	if m.HeartbeatInterval == 0 {
		m.HeartbeatInterval = d.HeartbeatInterval
	}
	if m.MaxPollInterval == 0 {
		m.MaxPollInterval = d.MaxPollInterval
	}
	return m
}

// Of is the engine's view of a public Membership block: its protocol parsed (the error
// names a bad one; the protocol is then Cooperative), its durations as given.
func Of(m member.Membership) (Membership, error) {
	p, err := ParseProtocol(string(m.Protocol))
	return Membership{Protocol: p, InstanceID: m.InstanceID, SessionTimeout: m.SessionTimeout,
		HeartbeatInterval: m.HeartbeatInterval, MaxPollInterval: m.MaxPollInterval}, err
}

// Validate returns every problem with m, each naming the field and the fix; nil when
// there is none. boundName and bound are the caller's revoke bound (processor's
// StopTimeout, distributed's StopTimeout): how long a revoke waits for a partition's
// work, which must end before MaxPollInterval or the member is removed mid-revoke.
//
// Call it on m as it will be used, the caller's own defaults applied (Or); zero durations
// left over are read as WithDefaults' defaults. A negative value is reported once, and
// not compared with the others.
func (m Membership) Validate(boundName string, bound time.Duration) []error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"SessionTimeout", m.SessionTimeout},
		{"HeartbeatInterval", m.HeartbeatInterval},
		{"MaxPollInterval", m.MaxPollInterval},
		{boundName, bound},
	} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("%s = %s, must not be negative (0 means the default)", f.name, f.d))
		}
	}
	d := m.WithDefaults()
	if m.Protocol != Consumer && d.SessionTimeout > 0 && d.HeartbeatInterval >= d.SessionTimeout {
		errs = append(errs, fmt.Errorf("HeartbeatInterval (%s) must be below SessionTimeout (%s): lower HeartbeatInterval (a third of SessionTimeout is usual) or raise SessionTimeout",
			d.HeartbeatInterval, d.SessionTimeout))
	}
	if d.MaxPollInterval > 0 && bound >= d.MaxPollInterval {
		errs = append(errs, fmt.Errorf("%s (%s) must be below MaxPollInterval (%s): a revoke that outlasts it gets the member removed from the group; lower %s or raise MaxPollInterval",
			boundName, bound, d.MaxPollInterval, boundName))
	}
	return errs
}

// ParseProtocol maps a public protocol name ("cooperative", "eager", "consumer": the
// values of processor.Protocol and distributed.Protocol) to the engine's Protocol. The
// empty string is the zero Protocol, Cooperative; a caller whose default depends on more
// (processor with several inputs) resolves "" before calling.
func ParseProtocol(s string) (Protocol, error) {
	if s == "" {
		return Cooperative, nil
	}
	for _, p := range []Protocol{Cooperative, Eager, Consumer} {
		if s == p.String() {
			return p, nil
		}
	}
	return 0, fmt.Errorf("Protocol %q: want %q, %q or %q", s, Cooperative.String(), Eager.String(), Consumer.String())
}

// Backoff is the shared exponential backoff with full jitter.
type Backoff = member.Backoff

// ErrPanic is wrapped by the error Recover makes of a panic.
var ErrPanic = member.ErrPanic

// PanicError is a panic recovered from user code (a handler, a process, a worker).
type PanicError struct {
	What  string // what panicked: "handler", "process 3", "group: worker of slot 1"
	Value any    // the value passed to panic
	Stack []byte // the panicking goroutine's stack
}

// Error reads "<What> panicked: <Value>" followed by the stack on the next lines, so
// the stack reaches whatever logs or returns the error.
func (e *PanicError) Error() string {
	return fmt.Sprintf("%s panicked: %v\n%s", e.What, e.Value, e.Stack)
}

// Brief reads "<What> panicked: <Value>" followed by the panicking goroutine's calls
// from the panic on, one per line as "function (file.go:line)": function names keep
// their import paths, files lose their directories (a build machine's paths), and
// argument words and program counters are dropped. A dead letter carries it.
func (e *PanicError) Brief() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s panicked: %v", e.What, e.Value)
	lines := strings.Split(strings.TrimSpace(string(e.Stack)), "\n")
	type frame struct{ fn, at string }
	var frames []frame
	for i := 0; i < len(lines); i++ {
		fn := lines[i]
		if strings.HasPrefix(fn, "goroutine ") || strings.HasPrefix(fn, "\t") {
			continue
		}
		if j := strings.LastIndexByte(fn, '('); j > 0 && strings.HasSuffix(fn, ")") && !strings.HasPrefix(fn, "created by ") {
			fn = fn[:j] // the argument words
		}
		var at string
		if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") {
			i++
			at = strings.TrimSpace(lines[i])
			if j := strings.LastIndex(at, " +0x"); j > 0 {
				at = at[:j]
			}
			at = filepath.Base(at)
		}
		frames = append(frames, frame{fn, at})
	}
	// The calls that recovered and formatted the panic are not the user's.
	for i, f := range frames {
		if f.fn == "panic" {
			frames = frames[i+1:]
			break
		}
	}
	for _, f := range frames {
		b.WriteString("\n")
		b.WriteString(f.fn)
		if f.at != "" {
			b.WriteString(" (" + f.at + ")")
		}
	}
	return b.String()
}

// Unwrap returns ErrPanic, and the panic value when it is an error (panic(err)).
func (e *PanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrPanic, err}
	}
	return []error{ErrPanic}
}

// Recover turns a panic into a *PanicError stored in *err. Defer it directly (recover
// works only in the deferred call itself):
//
//	func run(ctx context.Context, p Process) (err error) {
//		defer group.Recover(&err, "process")
//		return p(ctx)
//	}
//
// Without a panic it leaves *err alone. A goroutine ending through runtime.Goexit
// (t.FailNow) is not a panic and is not turned into an error.
func Recover(err *error, what string) {
	if r := recover(); r != nil {
		*err = &PanicError{What: what, Value: r, Stack: debug.Stack()}
	}
}
