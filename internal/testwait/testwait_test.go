package testwait

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeTB records a failure instead of ending the test; any other testing.TB method
// called on it panics (nil embedded interface).
type fakeTB struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = fmt.Sprintf(format, args...)
}

func TestForFailsWhenTheConditionNeverHolds(t *testing.T) {
	const d = 50 * time.Millisecond
	var tb fakeTB
	calls := 0
	start := time.Now()
	For(&tb, d, "the moon turns blue", func() bool { calls++; return false })
	took := time.Since(start)
	require.True(t, tb.failed, "a condition that never holds fails the test")
	assert.Equal(t, "testwait: the moon turns blue: not within 50ms", tb.msg)
	assert.GreaterOrEqual(t, took, d, "not before the bound")
	assert.Less(t, took, 10*time.Second, "it returns once the bound has passed")
	assert.Greater(t, calls, 1, "the condition is polled")
}

func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	var tb fakeTB
	calls := 0
	For(&tb, time.Minute, "three calls", func() bool { calls++; return calls == 3 })
	assert.False(t, tb.failed)
	assert.Equal(t, 3, calls, "no call after the condition held")

	calls = 0
	For(&tb, 0, "holds at once", func() bool { calls++; return true })
	assert.False(t, tb.failed, "a zero bound still checks the condition once")
	assert.Equal(t, 1, calls)

	For(&tb, 0, "never", func() bool { return false })
	assert.True(t, tb.failed)
}

func TestForNoErrorReportsTheLastError(t *testing.T) {
	var tb fakeTB
	calls := 0
	ForNoError(&tb, 30*time.Millisecond, "the answer", func() error { calls++; return fmt.Errorf("attempt %d: not yet", calls) })
	require.True(t, tb.failed)
	assert.Equal(t, fmt.Sprintf("testwait: the answer: not within 30ms: attempt %d: not yet", calls), tb.msg)

	tb = fakeTB{}
	calls = 0
	ForNoError(&tb, time.Minute, "the answer", func() error {
		calls++
		if calls < 2 {
			return fmt.Errorf("attempt %d", calls)
		}
		return nil
	})
	assert.False(t, tb.failed)
	assert.Equal(t, 2, calls)
}
