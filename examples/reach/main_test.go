package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReach runs the example end to end (embedded broker, or KAFKA_BROKERS in make test)
// and fails if any tweet's reach is wrong.
func TestReach(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, run(ctx))
}
