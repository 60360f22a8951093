package harness

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// RequireReal skips a real-stack test in -short mode, saying why; otherwise the test runs
// (and fails if the stack cannot start): CI never skips these.
func RequireReal(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("short mode: this test runs against a real Kafka (started from the Maven Central jars, or $KAFKA_BROKERS)")
	}
}

// RequireRedis skips a test against a real redis-server in -short mode, saying why.
func RequireRedis(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("short mode: this test runs against a real redis-server (started by integration/stack, or $REDIS_ADDR)")
	}
}

// RequireFaultSuite skips a long fault test unless SAMSA_FAULT_TESTS=1.
func RequireFaultSuite(tb testing.TB) {
	tb.Helper()
	if os.Getenv("SAMSA_FAULT_TESTS") != "1" {
		tb.Skip("long fault test (its own cluster, Redis or workers, minutes): runs in `make test-fault`; set SAMSA_FAULT_TESTS=1 to run it here")
	}
	RequireReal(tb)
}

// Seed returns $SAMSA_SEED when set (to replay a run), else a fresh seed.
func Seed(tb testing.TB) uint64 {
	tb.Helper()
	if s := os.Getenv("SAMSA_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(tb, err, "SAMSA_SEED")
		return v
	}
	return uint64(time.Now().UnixNano())
}
