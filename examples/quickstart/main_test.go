package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestQuickstart runs the quickstart as `go run ./examples/quickstart` does: on the
// embedded broker when KAFKA_BROKERS is unset, else on that cluster (make test sets it to
// the real test broker, so both paths are exercised in CI).
func TestQuickstart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, run(ctx))
}

func TestQuickstartEmbedded(t *testing.T) {
	if os.Getenv("KAFKA_BROKERS") == "" {
		t.Skip("TestQuickstart already ran on the embedded broker")
	}
	t.Setenv("KAFKA_BROKERS", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, run(ctx))
}
