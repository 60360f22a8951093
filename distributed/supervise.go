package distributed

import (
	"context"
	"fmt"
	"time"
)

// SuperviseOptions configures Supervise. The zero value restarts forever with a backoff
// from 100ms up to 30s.
type SuperviseOptions struct {
	// Backoff paces the restarts. Default: Initial 100ms, Max 30s (above Backoff's own
	// 10s: a process that keeps failing is usually waiting for something outside to
	// recover).
	Backoff Backoff
	// MaxRestarts gives up (returning the last error, which fails Run) after this many
	// restarts. 0 restarts forever.
	MaxRestarts int
	// ResetAfter: a run that lasted this long resets the backoff to Initial. Default: 1m.
	ResetAfter time.Duration
	// OnRestart, if set, is called before each restart with the attempt number (1-based)
	// and the error that ended the previous run (wrapping ErrPanic after a panic).
	OnRestart func(attempt int, err error)
}

// Supervise wraps p so that an error (or panic) restarts it after an exponential backoff
// with full jitter, instead of failing Run. A nil return still means done, and a
// cancelled context ends supervision, also during a backoff wait.
func Supervise(p Process, o SuperviseOptions) Process {
	if o.Backoff.Initial <= 0 {
		o.Backoff.Initial = 100 * time.Millisecond
	}
	if o.Backoff.Max <= 0 {
		o.Backoff.Max = 30 * time.Second
	}
	if o.ResetAfter <= 0 {
		o.ResetAfter = time.Minute
	}
	backoff := o.Backoff
	return func(ctx context.Context) error {
		failures := 0 // since the last reset: the backoff's attempt number
		for restarts := 0; ; restarts++ {
			started := time.Now()
			err := runProcess(ctx, p)
			if err == nil || ctx.Err() != nil {
				return nil
			}
			if o.MaxRestarts > 0 && restarts >= o.MaxRestarts {
				return fmt.Errorf("gave up after %d restarts: %w", restarts, err)
			}
			if time.Since(started) >= o.ResetAfter {
				failures = 0
			}
			if o.OnRestart != nil {
				o.OnRestart(restarts+1, err)
			}
			if count, ok := ctx.Value(restartKey{}).(func()); ok {
				count()
			}
			if !backoff.Sleep(ctx, failures) {
				return nil
			}
			failures++
		}
	}
}
