package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPrinters runs the example for a few seconds (embedded broker, or KAFKA_BROKERS in
// make test) and expects a clean stop.
func TestPrinters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, run(ctx, fmt.Sprintf("printers-test-%d", time.Now().UnixNano()), 20, 500*time.Millisecond))
}
