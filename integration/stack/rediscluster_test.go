package stack

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRedisClusterLauncher(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: needs redis-server and redis-cli")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	start := time.Now()
	c, err := StartRedisCluster(ctx, RedisClusterOptions{Masters: 3})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	t.Logf("3-master Redis Cluster ready in %s on %v", time.Since(start).Round(time.Millisecond), c.Addrs())
	require.Len(t, c.Addrs(), 3)

	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	// Keys spread over all slots, so every master answers some.
	for i := range 200 {
		k := fmt.Sprintf("launcher-%d", i)
		require.NoError(t, cc.Set(ctx, k, i, time.Minute).Err())
		v, err := cc.Get(ctx, k).Int()
		require.NoError(t, err)
		require.Equal(t, i, v)
	}
	var masters atomic.Int32 // ForEachMaster calls concurrently
	require.NoError(t, cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		if err == nil && n > 0 {
			masters.Add(1)
		}
		return err
	}))
	assert.Equal(t, int32(3), masters.Load(), "every master holds some of the keys")

	shards, err := cc.ClusterSlots(ctx).Result()
	require.NoError(t, err)
	covered := 0
	for _, s := range shards {
		covered += s.End - s.Start + 1
	}
	assert.Equal(t, 16384, covered, "all slots assigned")

	pids := c.PIDs()
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close must be idempotent")
	for _, pid := range pids {
		assertGone(t, pid)
	}
}
