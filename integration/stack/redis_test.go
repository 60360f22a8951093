package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireClosed closes twice (Close must be idempotent) and checks that pids are gone.
func requireClosed(t *testing.T, close func() error, pids ...int) {
	t.Helper()
	require.NoError(t, close())
	require.NoError(t, close(), "Close must be idempotent")
	for _, pid := range pids {
		assertGone(t, pid)
	}
}

// assertGone checks that pid no longer exists (it was reaped, so not even a zombie).
func assertGone(t *testing.T, pid int) {
	t.Helper()
	require.NotZero(t, pid)
	err := syscall.Kill(pid, 0)
	assert.True(t, errors.Is(err, syscall.ESRCH), "pid %d still exists (kill -0: %v)", pid, err)
}

func TestRedisLauncher(t *testing.T) {
	needs(t, "redis-server")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	r, err := StartRedis(ctx, RedisOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, r.Close()) })
	addr := r.Addr()
	redisRoundTrip(ctx, t, addr)

	oldPID := r.PID()
	require.NoError(t, r.Kill())
	assertGone(t, oldPID)
	require.NoError(t, r.Restart(ctx))
	require.Equal(t, addr, r.Addr(), "Restart must keep the address")
	require.NotEqual(t, oldPID, r.PID())
	redisRoundTrip(ctx, t, addr)

	// Stop (SIGTERM) then Restart, as fault tests do.
	require.NoError(t, r.Stop())
	require.NoError(t, r.Restart(ctx))
	redisRoundTrip(ctx, t, addr)

	requireClosed(t, r.Close, r.PID())
	require.Error(t, r.Restart(ctx), "Restart after Close")
}

// TestRedisEnv checks the env contract: REDIS_ADDR, when set, points at a running Redis.
func TestRedisEnv(t *testing.T) {
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		t.Skip("REDIS_ADDR not set: no external Redis to check")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	redisRoundTrip(ctx, t, addr)
}

func redisRoundTrip(ctx context.Context, t *testing.T, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	key := "samsa-stack-test:" + t.Name()
	val := time.Now().Format(time.RFC3339Nano)
	require.NoError(t, c.Set(ctx, key, val, time.Minute).Err(), "SET on %s", addr)
	got, err := c.Get(ctx, key).Result()
	require.NoError(t, err, "GET on %s", addr)
	require.Equal(t, val, got)
	require.NoError(t, c.Del(ctx, key).Err())
}

// TestRedisPortTaken checks that a lost port race is recognised, which is what makes
// StartRedis retry on a new port instead of failing.
func TestRedisPortTaken(t *testing.T) {
	needs(t, "redis-server")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })

	bin, _, err := redisServer(false)
	require.NoError(t, err)
	r, err := newRedis(bin, t.TempDir(), nil)
	require.NoError(t, err)
	r.port = l.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { assert.NoError(t, r.Close()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.ErrorIs(t, r.start(ctx), errPortInUse)
}

// TestRedisTLSAndUser: a server started with TLS and an ACL user serves that user over
// TLS within its rules, refuses it outside them (NOPERM) and with a wrong password
// (WRONGPASS), refuses a plaintext client, and keeps the user across Restart.
func TestRedisTLSAndUser(t *testing.T) {
	needs(t, "redis-server")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := StartRedis(ctx, RedisOptions{TLS: true, User: &RedisUser{Name: "app", Password: "app-pw", Rules: "~app:* +get +set"}})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, r.Close()) })
	require.NotNil(t, r.TLSFiles())

	client := func(user, pass string, tlsOn bool) *redis.Client {
		o := &redis.Options{Addr: r.Addr(), Username: user, Password: pass, MaxRetries: -1, DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second}
		if tlsOn {
			o.TLSConfig = r.TLSConfig()
		}
		c := redis.NewClient(o)
		t.Cleanup(func() { c.Close() })
		return c
	}
	for i := range 2 { // before and after Restart
		if i > 0 {
			require.NoError(t, r.Restart(ctx))
		}
		app := client("app", "app-pw", true)
		require.NoError(t, app.Set(ctx, "app:k", "v", 0).Err())
		got, err := app.Get(ctx, "app:k").Result()
		require.NoError(t, err)
		assert.Equal(t, "v", got)
		assert.ErrorContains(t, app.Set(ctx, "other:k", "v", 0).Err(), "NOPERM", "a key outside ~app:*")
		assert.ErrorContains(t, app.Del(ctx, "app:k").Err(), "NOPERM", "a command not granted")
		err = client("app", "not-app-pw-7Qz", true).Ping(ctx).Err()
		assert.ErrorContains(t, err, "WRONGPASS")
		assert.NotContains(t, err.Error(), "7Qz", "the error does not echo the password")
		assert.Error(t, client("", "", false).Ping(ctx).Err(), "a plaintext client gets nothing from the TLS port")
	}
}

func TestRedisUserValidate(t *testing.T) {
	for _, u := range []RedisUser{{Name: "", Password: "p"}, {Name: "a b", Password: "p"}, {Name: "a", Password: ""},
		{Name: "a", Password: "p q"}, {Name: "a", Password: "p", Rules: "+get\n+set"}} {
		_, err := StartRedis(context.Background(), RedisOptions{User: &u})
		assert.ErrorContains(t, err, "RedisUser", "%+v", u)
	}
}

// TestTLSUnsupported: only an unknown tls-* directive reads as a build without TLS; a
// bad value of another option, or a TLS option the server knows but cannot use (a
// missing certificate), does not.
func TestTLSUnsupported(t *testing.T) {
	const fatal = "\n*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***\nReading the configuration file, at line "
	for log, want := range map[string]bool{
		fatal + "3\n>>> 'tls-port \"40001\"'\nBad directive or wrong number of arguments\n":                        true,
		fatal + "9\n>>> 'maxmemory-policy \"tls\"'\nargument(s) must be one of the following: volatile-lru, ...\n": false,
		"1:M 02 Dec 2026 08:00:00.000 # Failed to configure TLS: Failed to load certificate: /tmp/x/redis.crt\n":   false,
	} {
		assert.Equal(t, want, tlsUnsupported(log), log)
	}
}

func TestRedisClusterLauncher(t *testing.T) {
	needs(t, "redis-server and redis-cli")
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
	requireClosed(t, c.Close, c.PIDs()...)
}
