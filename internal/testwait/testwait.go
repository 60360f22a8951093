// Package testwait makes tests wait for a condition instead of sleeping: a test states
// what it waits for and the longest it may take, and the wait ends as soon as the
// condition holds.
package testwait

import (
	"testing"
	"time"
)

// interval is the pause between two calls of a condition.
const interval = 10 * time.Millisecond

// For calls cond on the caller's goroutine, at once and then every 10 ms, until it
// returns true. If cond has not returned true when d has passed, For fails tb with what
// and d (tb.Fatalf; call For from the test's goroutine). cond may itself fail tb.
func For(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !poll(d, cond) {
		tb.Fatalf("testwait: %s: not within %s", what, d)
	}
}

// ForNoError is For for a condition that says why it does not hold yet: it calls cond
// until it returns nil, and when d has passed fails tb with what, d and cond's last
// error.
func ForNoError(tb testing.TB, d time.Duration, what string, cond func() error) {
	tb.Helper()
	var last error
	if !poll(d, func() bool { last = cond(); return last == nil }) {
		tb.Fatalf("testwait: %s: not within %s: %v", what, d, last)
	}
}

// poll calls cond until it returns true (then poll returns true) or d has passed
// (false). The last call starts at or after the deadline, so a condition that holds by
// then is seen.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(interval, left))
	}
}
