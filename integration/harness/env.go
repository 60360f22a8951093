package harness

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/stack"
)

// StartKafka starts a test's own Kafka of opts within timeout, failing tb with what
// when it cannot ("start the three-node cluster"); it is closed when tb ends.
func StartKafka(tb testing.TB, timeout time.Duration, opts stack.KafkaOptions, what string) *stack.Kafka {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	k, err := stack.StartKafka(ctx, opts)
	require.NoError(tb, err, what)
	tb.Cleanup(func() { k.Close() })
	return k
}
