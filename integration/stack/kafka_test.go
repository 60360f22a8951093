package stack

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestKafkaSingleStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: starting a real Kafka broker takes seconds (needs java and mvn)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	k, err := StartKafka(ctx, KafkaOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { k.Close() })
	t.Logf("1-node cluster ready in %s at %s", time.Since(start), k.Bootstrap())
	pid := k.PID(1)
	require.NotZero(t, pid)
	require.NoError(t, k.KillBroker(1))
	require.Zero(t, k.PID(1))
	start = time.Now()
	require.NoError(t, k.StartBroker(ctx, 1))
	t.Logf("restarted in %s", time.Since(start))
	require.NoError(t, k.Close())
	require.NoError(t, k.Close())
}

// TestKafkaJarsCached: the jars are fetched once; a second call finds them and runs no
// Maven (the cache marker is not rewritten).
func TestKafkaJarsCached(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: fetching the Kafka jars needs Maven and Maven Central")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir, err := KafkaJars(ctx, DefaultKafkaVersion)
	require.NoError(t, err)
	marker := filepath.Join(dir, ".complete")
	st1, err := os.Stat(marker)
	require.NoError(t, err)
	dir2, err := KafkaJars(ctx, DefaultKafkaVersion)
	require.NoError(t, err)
	require.Equal(t, dir, dir2)
	st2, err := os.Stat(marker)
	require.NoError(t, err)
	require.Equal(t, st1.ModTime(), st2.ModTime(), "second KafkaJars call rewrote the cache")
	jars, err := filepath.Glob(filepath.Join(dir, "kafka_2.13-*.jar"))
	require.NoError(t, err)
	require.Len(t, jars, 1)
}
