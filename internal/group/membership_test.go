package group

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMembershipDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Membership
		or   Membership
		want Membership
	}{
		{
			name: "zero takes the defaults",
			want: Membership{SessionTimeout: 45 * time.Second, HeartbeatInterval: 3 * time.Second, MaxPollInterval: 5 * time.Minute},
		},
		{
			name: "set fields are kept, negative ones too (Validate reports them)",
			in:   Membership{Protocol: Eager, InstanceID: "i", SessionTimeout: time.Second, HeartbeatInterval: -1, MaxPollInterval: time.Minute},
			want: Membership{Protocol: Eager, InstanceID: "i", SessionTimeout: time.Second, HeartbeatInterval: -1, MaxPollInterval: time.Minute},
		},
		{
			name: "a caller's own defaults come first, the rest from WithDefaults",
			in:   Membership{Protocol: Consumer, HeartbeatInterval: 2 * time.Second},
			or:   Membership{SessionTimeout: 10 * time.Second, HeartbeatInterval: time.Second},
			want: Membership{Protocol: Consumer, SessionTimeout: 10 * time.Second, HeartbeatInterval: 2 * time.Second, MaxPollInterval: 5 * time.Minute},
		},
		{
			name: "Or does not touch the protocol",
			in:   Membership{Protocol: Cooperative},
			or:   Membership{Protocol: Eager, InstanceID: "d"},
			want: Membership{Protocol: Cooperative, InstanceID: "d", SessionTimeout: 45 * time.Second, HeartbeatInterval: 3 * time.Second, MaxPollInterval: 5 * time.Minute},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			assert.Equal(t, tc.want, tc.in.Or(tc.or).WithDefaults())
			assert.Equal(t, in, tc.in, "the receiver is not modified")
		})
	}
}

func TestMembershipValidate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		m         Membership
		bound     time.Duration
		want      []string // substrings, one per expected error, in order
		wantCount int
	}{
		{name: "zero is valid", bound: 30 * time.Second},
		{name: "zero bound is valid", m: Membership{}.WithDefaults()},
		{
			name:  "negative durations, each named",
			m:     Membership{SessionTimeout: -time.Second, HeartbeatInterval: -2 * time.Second, MaxPollInterval: -3 * time.Second},
			bound: -4 * time.Second,
			want: []string{
				"SessionTimeout = -1s, must not be negative",
				"HeartbeatInterval = -2s, must not be negative",
				"MaxPollInterval = -3s, must not be negative",
				"StopTimeout = -4s, must not be negative",
			},
		},
		{
			name:  "heartbeat at the session timeout (classic protocol)",
			m:     Membership{SessionTimeout: 3 * time.Second},
			bound: time.Second,
			want:  []string{"HeartbeatInterval (3s) must be below SessionTimeout (3s): lower HeartbeatInterval"},
		},
		{
			name:  "heartbeat above the session timeout, eager",
			m:     Membership{Protocol: Eager, SessionTimeout: time.Second, HeartbeatInterval: 2 * time.Second},
			bound: time.Second,
			want:  []string{"HeartbeatInterval (2s) must be below SessionTimeout (1s)"},
		},
		{
			name:  "heartbeat is a broker setting with the consumer protocol",
			m:     Membership{Protocol: Consumer, SessionTimeout: time.Second, HeartbeatInterval: 2 * time.Second},
			bound: time.Second,
		},
		{
			name:  "revoke bound at the max poll interval",
			m:     Membership{MaxPollInterval: time.Minute},
			bound: time.Minute,
			want:  []string{"StopTimeout (1m0s) must be below MaxPollInterval (1m0s): a revoke that outlasts it gets the member removed from the group; lower StopTimeout or raise MaxPollInterval"},
		},
		{
			name:  "revoke bound above the default max poll interval",
			bound: 10 * time.Minute,
			want:  []string{"StopTimeout (10m0s) must be below MaxPollInterval (5m0s)"},
		},
		{
			name:  "a negative value is not compared with the others",
			m:     Membership{SessionTimeout: -time.Second, MaxPollInterval: -time.Second},
			bound: time.Second,
			want:  []string{"SessionTimeout = -1s", "MaxPollInterval = -1s"},
		},
		{
			name:  "every problem at once",
			m:     Membership{SessionTimeout: time.Second, HeartbeatInterval: time.Second, MaxPollInterval: -time.Second},
			bound: -time.Second,
			want:  []string{"MaxPollInterval = -1s", "StopTimeout = -1s", "HeartbeatInterval (1s) must be below SessionTimeout (1s)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := tc.m.Validate("StopTimeout", tc.bound)
			require.Len(t, errs, len(tc.want), "%v", errs)
			for i, want := range tc.want {
				assert.Contains(t, errs[i].Error(), want)
			}
		})
	}
}

func TestParseProtocol(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Protocol
		wantErr string
	}{
		{in: "", want: Cooperative},
		{in: "cooperative", want: Cooperative},
		{in: "eager", want: Eager},
		{in: "consumer", want: Consumer},
		{in: "sticky", wantErr: `Protocol "sticky": want "cooperative", "eager" or "consumer"`},
		{in: "Eager", wantErr: `Protocol "Eager": want`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParseProtocol(tc.in)
			if tc.wantErr != "" {
				assert.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, p)
			if tc.in != "" {
				assert.Equal(t, tc.in, p.String(), "the name round-trips")
			}
		})
	}
}

func TestBackoffWait(t *testing.T) {
	for _, tc := range []struct {
		name  string
		b     Backoff
		n     int
		upper time.Duration
	}{
		{name: "defaults, first", n: 0, upper: 100 * time.Millisecond},
		{name: "defaults, doubling", n: 3, upper: 800 * time.Millisecond},
		{name: "defaults, capped at 10s", n: 20, upper: 10 * time.Second},
		{name: "negative attempt counts as the first", n: -5, upper: 100 * time.Millisecond},
		{name: "huge attempt does not overflow", n: 1 << 30, upper: 10 * time.Second},
		{name: "custom", b: Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}, n: 2, upper: 4 * time.Millisecond},
		{name: "custom, capped", b: Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}, n: 3, upper: 5 * time.Millisecond},
		{name: "initial above max is capped", b: Backoff{Initial: time.Second, Max: time.Millisecond}, upper: time.Millisecond},
		{name: "negative fields mean the defaults", b: Backoff{Initial: -1, Max: -1}, n: 1, upper: 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var top time.Duration
			for range 2000 {
				w := tc.b.Wait(tc.n)
				require.GreaterOrEqual(t, w, time.Duration(0))
				require.LessOrEqual(t, w, tc.upper)
				top = max(top, w)
			}
			assert.Greater(t, top, tc.upper/2, "full jitter reaches the upper half of [0, bound]")
		})
	}
}

func TestBackoffSleep(t *testing.T) {
	long := Backoff{Initial: time.Hour, Max: time.Hour}
	for _, tc := range []struct {
		name   string
		b      Backoff
		cancel time.Duration // <0: cancelled before Sleep; 0: never
		want   bool
		within time.Duration
	}{
		{name: "ended context returns at once", b: long, cancel: -1, want: false, within: time.Second}, // against an hour; a loaded CI machine can stall a goroutine for tens of ms
		{name: "cancellation ends the wait at once", b: long, cancel: 20 * time.Millisecond, want: false, within: time.Second},
		{name: "a full wait returns true", b: Backoff{Initial: time.Millisecond, Max: time.Millisecond}, want: true, within: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			switch {
			case tc.cancel < 0:
				cancel()
			case tc.cancel > 0:
				stop := time.AfterFunc(tc.cancel, cancel)
				defer stop.Stop()
			}
			start := time.Now()
			assert.Equal(t, tc.want, tc.b.Sleep(ctx, 0))
			assert.Less(t, time.Since(start), tc.within)
		})
	}
}

var errBoom = errors.New("boom")

func panicker(v any) func() error {
	return func() error { panic(v) }
}

func guarded(what string, f func() error) (err error) {
	defer Recover(&err, what)
	return f()
}

func TestRecover(t *testing.T) {
	for _, tc := range []struct {
		name    string
		f       func() error
		want    string // substring of the error; "" for nil
		panic   bool
		wrapped error
	}{
		{name: "no panic, nil", f: func() error { return nil }},
		{name: "no panic, the error is kept", f: func() error { return errBoom }, want: "boom", wrapped: errBoom},
		{name: "a string panic", f: panicker("kaput"), want: "process 3 panicked: kaput\n", panic: true},
		{name: "an error panic stays reachable", f: panicker(fmt.Errorf("ctx: %w", errBoom)), want: "process 3 panicked: ctx: boom", panic: true, wrapped: errBoom},
		{name: "a runtime error", f: func() error { var m map[string]int; m["x"] = 1; return nil }, want: "assignment to entry in nil map", panic: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := guarded("process 3", tc.f)
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, tc.panic, errors.Is(err, ErrPanic))
			if tc.wrapped != nil {
				assert.ErrorIs(t, err, tc.wrapped)
			}
			if tc.panic {
				var pe *PanicError
				require.ErrorAs(t, err, &pe)
				assert.Equal(t, "process 3", pe.What)
				// The stack names the goroutine and the panicking function.
				assert.True(t, strings.Contains(err.Error(), "goroutine ") && strings.Contains(err.Error(), "membership_test.go"), "stack in the error text:\n%s", err)
			}
		})
	}
}
