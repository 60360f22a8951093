package view_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/processor/view"
)

// BenchmarkLookup looks the same keys up through a View's in-memory store, through a
// View kept in Redis, and with a plain Redis GET (the lookup a handler would make
// without a View), in one run on one machine; the parallel cases look up from
// GOMAXPROCS goroutines at once. The Redis cases need $REDIS_ADDR (go run
// ./integration/cmd/stack run -no-jaeger -no-registry -- go test -run '^$' -bench
// Lookup ./processor/view/) and are skipped without it.
func BenchmarkLookup(b *testing.B) {
	const keys, valueSize = 10_000, 100
	brokers := startBroker(b, embedded.Topic{Name: "table", Partitions: 4})
	recs := make([]rec, keys)
	names := make([]string, keys)
	value := string(make([]byte, valueSize))
	for i := range recs {
		names[i] = fmt.Sprintf("key-%07d", i)
		recs[i] = str(names[i], value)
	}
	produce(b, brokers, "table", 4, recs...)

	lookups := func(b *testing.B, get func(k string) (string, bool, error)) {
		r := rand.New(rand.NewPCG(1, 2))
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			v, found, err := get(names[r.IntN(keys)])
			if err != nil || !found || len(v) != valueSize {
				b.Fatalf("lookup: %q %v %v", v, found, err)
			}
		}
	}

	parallel := func(b *testing.B, get func(k string) (string, bool, error)) {
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			r := rand.New(rand.NewPCG(rand.Uint64(), 2))
			for pb.Next() {
				v, found, err := get(names[r.IntN(keys)])
				if err != nil || !found || len(v) != valueSize {
					b.Errorf("lookup: %q %v %v", v, found, err)
					return
				}
			}
		})
	}

	mem := newStringView(b, view.Config{Brokers: brokers}, "table")
	run(b, mem)
	waitReady(b, mem)
	b.Run("view-memory", func(b *testing.B) { lookups(b, mem.Get) })
	b.Run("view-memory-parallel", func(b *testing.B) { parallel(b, mem.Get) })

	addr := os.Getenv("REDIS_ADDR")
	var rc *redis.Client
	if addr != "" {
		rc = redis.NewClient(&redis.Options{Addr: addr})
		defer rc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := rc.Ping(ctx).Err()
		cancel()
		if err != nil {
			b.Logf("Redis at REDIS_ADDR=%s does not answer (%v): Redis cases skipped", addr, err)
			rc = nil
		}
	}
	prefix := fmt.Sprintf("viewbench:%d:", time.Now().UnixNano())
	b.Run("view-redis", func(b *testing.B) {
		if rc == nil {
			b.Skip("no Redis: set REDIS_ADDR")
		}
		v := newStringView(b, view.Config{Brokers: brokers, Redis: rc, RedisPrefix: prefix + "view:"}, "table")
		run(b, v)
		waitReady(b, v)
		lookups(b, v.Get)
	})
	b.Run("redis-get", func(b *testing.B) {
		if rc == nil {
			b.Skip("no Redis: set REDIS_ADDR")
		}
		ctx := context.Background()
		pipe := rc.Pipeline()
		for _, k := range names {
			pipe.Set(ctx, prefix+k, value, 0)
		}
		_, err := pipe.Exec(ctx)
		require.NoError(b, err)
		get := func(k string) (string, bool, error) {
			v, err := rc.Get(ctx, prefix+k).Result()
			if err == redis.Nil {
				return "", false, nil
			}
			return v, err == nil, err
		}
		lookups(b, get)
	})
	b.Run("redis-get-parallel", func(b *testing.B) {
		if rc == nil {
			b.Skip("no Redis: set REDIS_ADDR")
		}
		ctx := context.Background()
		parallel(b, func(k string) (string, bool, error) {
			v, err := rc.Get(ctx, prefix+k).Result()
			if err == redis.Nil {
				return "", false, nil
			}
			return v, err == nil, err
		})
	})
	if rc != nil {
		ctx := context.Background()
		for _, k := range names {
			rc.Del(ctx, prefix+k)
		}
		for i := range 64 {
			rc.Del(ctx, fmt.Sprintf("%sview:%d", prefix, i))
		}
	}
}
