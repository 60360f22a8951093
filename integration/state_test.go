package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/statetest"
)

func stateCtx(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// stateNamespace returns a fresh namespace and removes its keys (plain and table) when the
// test ends, so a shared or external Redis is left as it was.
func stateNamespace(tb testing.TB, c redis.UniversalClient) string {
	ns := strings.ReplaceAll(stack.UniqueName("st"), "-", ".")
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		del := func(ctx context.Context, node *redis.Client) error {
			for _, pattern := range []string{ns + ":*", "{" + ns + ":*"} {
				iter := node.Scan(ctx, 0, pattern, 1000).Iterator()
				for iter.Next(ctx) {
					if err := node.Del(ctx, iter.Val()).Err(); err != nil {
						return err
					}
				}
				if err := iter.Err(); err != nil {
					return err
				}
			}
			return nil
		}
		var err error
		switch cc := c.(type) {
		case *redis.ClusterClient:
			err = cc.ForEachMaster(ctx, del)
		case *redis.Client:
			err = del(ctx, cc)
		}
		if err != nil {
			tb.Logf("clean up namespace %s: %v", ns, err)
		}
	})
	return ns
}

// runStateConformance runs the whole statetest suite on client.
func runStateConformance(t *testing.T, client redis.UniversalClient) {
	runStateConformanceAs(t, client, client)
}

// runStateConformanceAs runs the suite's stores on client and cleans their namespaces
// up through admin (which may do what client's ACL user may not: SCAN).
func runStateConformanceAs(t *testing.T, client, admin redis.UniversalClient) {
	t.Run("Store", func(t *testing.T) {
		statetest.TestStore(t, func(t *testing.T) state.Store[string, string] {
			s, err := state.NewRedis(client, stateNamespace(t, admin), codec.String(), codec.String())
			require.NoError(t, err)
			return s
		})
	})
	t.Run("StoreTTL", func(t *testing.T) {
		statetest.TestStoreTTL(t, func(t *testing.T, ttl time.Duration) state.Store[string, string] {
			s, err := state.NewRedis(client, stateNamespace(t, admin), codec.String(), codec.String(), state.WithTTL(ttl))
			require.NoError(t, err)
			return s
		})
	})
	t.Run("Table", func(t *testing.T) {
		statetest.TestTable(t, func(t *testing.T) *state.Table[string, string] {
			tbl, err := state.NewTable(client, stateNamespace(t, admin), codec.String(), codec.String())
			require.NoError(t, err)
			return tbl
		})
	})
	t.Run("TableTTL", func(t *testing.T) {
		statetest.TestStoreTTL(t, func(t *testing.T, ttl time.Duration) state.Store[string, string] {
			tbl, err := state.NewTable(client, stateNamespace(t, admin), codec.String(), codec.String(), state.WithTTL(ttl))
			require.NoError(t, err)
			return tbl.Partition(5)
		})
	})
	t.Run("TableApplyTTL", func(t *testing.T) {
		ctx := stateCtx(t, 30*time.Second)
		tbl, err := state.NewTable(client, stateNamespace(t, admin), codec.String(), codec.String(), state.WithTTL(300*time.Millisecond))
		require.NoError(t, err)
		require.NoError(t, tbl.Apply(ctx, 1, []state.Entry[string, string]{{Key: "a", Value: "1"}}, nil, map[string]int64{"in": 7}))
		require.NoError(t, tbl.PutFenced(ctx, 1, "f", 3, state.Entry[string, string]{Key: "b", Value: "2"}))
		assert.Eventually(t, func() bool {
			_, found, err := tbl.Partition(1).GetMany(ctx, []string{"a", "b"})
			return err == nil && !found[0] && !found[1]
		}, 10*time.Second, 50*time.Millisecond, "values written by Apply and PutFenced expire")
		next, err := tbl.Applied(ctx, "in", 1)
		require.NoError(t, err)
		assert.Equal(t, int64(7), next, "applied offsets never expire")
		assert.ErrorIs(t, tbl.PutFenced(ctx, 1, "f", 2), state.ErrFenced, "fencing tokens never expire")
	})
}

// TestStateRedis runs the state conformance suite on a real single redis-server.
func TestStateRedis(t *testing.T) {
	harness.RequireRedis(t)
	client := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(t)})
	t.Cleanup(func() { client.Close() })
	runStateConformance(t, client)
}

// TestStateRedisCluster runs the suite on a real three-master Redis Cluster, and shows why
// a table's keys carry the hash tag {namespace:partition}.
func TestStateRedisCluster(t *testing.T) {
	harness.RequireRedis(t)
	start := time.Now()
	rc, err := stack.StartRedisCluster(stateCtx(t, 2*time.Minute), stack.RedisClusterOptions{Masters: 3})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, rc.Close()) })
	t.Logf("Redis Cluster (3 masters) ready in %s", time.Since(start).Round(time.Millisecond))
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
	t.Cleanup(func() { client.Close() })

	runStateConformance(t, client)

	t.Run("PartitionKeysShareASlot", func(t *testing.T) {
		ctx := stateCtx(t, 30*time.Second)
		for _, p := range []int32{0, 1, 7} {
			tag := fmt.Sprintf("{ns:%d}", p)
			want, err := client.ClusterKeySlot(ctx, tag).Result()
			require.NoError(t, err)
			for _, k := range []string{tag + ":applied", tag + ":fences", tag + ":k:user-1", tag + ":k:a}b{c"} {
				got, err := client.ClusterKeySlot(ctx, k).Result()
				require.NoError(t, err)
				assert.Equal(t, want, got, k)
			}
		}
	})

	t.Run("CrossSlotWithoutHashTag", func(t *testing.T) {
		// A two-key script, as Apply is: keys of two partitions without a common hash tag
		// land in different slots, which a Cluster refuses (CROSSSLOT); a single redis-server
		// runs the same script happily, so only a Cluster test shows the need for the tag.
		ctx := stateCtx(t, 30*time.Second)
		const script = `redis.call('SET', KEYS[1], '1'); redis.call('SET', KEYS[2], '1'); return 1`
		ns := stateNamespace(t, client)
		untagged := []string{ns + ":0:applied", ns + ":1:k:user-1"}
		s0, err := client.ClusterKeySlot(ctx, untagged[0]).Result()
		require.NoError(t, err)
		s1, err := client.ClusterKeySlot(ctx, untagged[1]).Result()
		require.NoError(t, err)
		require.NotEqual(t, s0, s1, "pick keys in different slots")
		err = client.Eval(ctx, script, untagged).Err()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "CROSSSLOT")

		tagged := []string{"{" + ns + ":0}:applied", "{" + ns + ":0}:k:user-1"}
		require.NoError(t, client.Eval(ctx, script, tagged).Err())

		single := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(t)})
		defer single.Close()
		require.NoError(t, single.Eval(ctx, script, untagged).Err(), "a single node does not care")
		require.NoError(t, single.Del(ctx, untagged...).Err())
	})

	t.Run("ACL", func(t *testing.T) { clusterACL(t, rc, client) })
}

// clusterACL: on a Cluster, a user granted the processor's rules plus +cluster|slots and
// +command (go-redis's Cluster client reads the slot map with CLUSTER SLOTS and the
// commands' key positions with COMMAND) passes the whole state conformance suite with no
// ACL denial on any node; without +cluster|slots every call fails with NOPERM.
func clusterACL(t *testing.T, rc *stack.RedisCluster, admin *redis.ClusterClient) {
	ctx := stateCtx(t, time.Minute)
	const password = "cluster-acl-secret-Vn30"
	var nodes []*redis.Client
	for _, addr := range rc.Addrs() {
		node := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { node.Close() })
		nodes = append(nodes, node)
	}
	setUser := func(name, rules string) {
		for _, node := range nodes { // ACLs are per node: a Cluster does not share them
			require.NoError(t, setRedisUser(ctx, node, name, password, rules), node.Options().Addr)
		}
	}
	asUser := func(name string) *redis.ClusterClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), Username: name, Password: password, MaxRedirects: 3})
		t.Cleanup(func() { c.Close() })
		return c
	}
	rules := stateRedisACL("st.*")
	setUser("samsa-cluster", rules+" +cluster|slots +command")
	setUser("samsa-cluster-noslots", rules+" +command")
	for _, node := range nodes {
		require.NoError(t, node.ACLLogReset(ctx).Err())
	}

	runStateConformanceAs(t, asUser("samsa-cluster"), admin)
	var denied []string
	for _, node := range nodes {
		d, err := aclDenials(ctx, node)
		require.NoError(t, err, node.Options().Addr)
		for _, line := range d {
			denied = append(denied, node.Options().Addr+": "+line)
		}
	}
	assert.Empty(t, denied, "commands or keys the ACL denied during the suite")

	err := asUser("samsa-cluster-noslots").Get(ctx, "st.x:k").Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "NOPERM", "a Cluster client without +cluster|slots")
}

// TestStateRedisOutage stops and kills Redis under a store and a table: calls fail with
// errors that name the operation and namespace but no key or value, and work again after a
// restart on the same address, with the same store values (no re-creation).
func TestStateRedisOutage(t *testing.T) {
	harness.RequireRedis(t)
	ctx := stateCtx(t, 2*time.Minute)
	r, err := stack.StartRedis(ctx, stack.RedisOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, r.Close()) })
	// Default retries; fewer dial attempts per retry than the default 5 only to keep the
	// test short.
	client := redis.NewClient(&redis.Options{Addr: r.Addr(), DialTimeout: 500 * time.Millisecond, DialerRetries: 2})
	t.Cleanup(func() { client.Close() })

	const secret = "SECRET-PAYLOAD-9931"
	s, err := state.NewRedis(client, "purchases", codec.String(), codec.String())
	require.NoError(t, err)
	tbl, err := state.NewTable(client, "purchases", codec.String(), codec.String())
	require.NoError(t, err)
	es := []state.Entry[string, string]{{Key: secret, Value: secret}, {Key: "k2", Value: secret}}

	works := func(t *testing.T, round int) {
		t.Helper()
		require.NoError(t, s.PutMany(ctx, es))
		v, found, err := s.Get(ctx, secret)
		require.NoError(t, err)
		require.True(t, found)
		require.Equal(t, secret, v)
		require.NoError(t, tbl.Apply(ctx, 3, es, nil, map[string]int64{"in": int64(round)}))
		require.NoError(t, tbl.PutFenced(ctx, 3, "f", int64(round)))
	}
	works(t, 1)

	for i, down := range []struct {
		name string
		stop func() error
	}{{"SIGTERM", r.Stop}, {"SIGKILL", r.Kill}} {
		t.Run(down.name, func(t *testing.T) {
			require.NoError(t, down.stop())
			calls := []struct {
				want string
				call func(context.Context) error
			}{
				{`state: redis PutMany "purchases" (2 keys): `, func(ctx context.Context) error { return s.PutMany(ctx, es) }},
				{`state: redis GetMany "purchases" (2 keys): `, func(ctx context.Context) error { _, _, err := s.GetMany(ctx, []string{secret, "k2"}); return err }},
				{`state: redis Get "purchases" (1 key): `, func(ctx context.Context) error { _, _, err := s.Get(ctx, secret); return err }},
				{`state: redis Delete "purchases" (1 key): `, func(ctx context.Context) error { return s.Delete(ctx, secret) }},
				{`state: redis Apply "purchases" partition 3 (2 keys): `, func(ctx context.Context) error {
					return tbl.Apply(ctx, 3, es, nil, map[string]int64{"in": 100})
				}},
				{`state: redis Applied "purchases" partition 3: `, func(ctx context.Context) error { _, err := tbl.Applied(ctx, "in", 3); return err }},
				{`state: redis PutFenced "purchases" partition 3 (2 keys): `, func(ctx context.Context) error { return tbl.PutFenced(ctx, 3, "f", 100, es...) }},
				{`state: redis GetMany "purchases" partition 3 (1 key): `, func(ctx context.Context) error {
					_, _, err := tbl.Partition(3).GetMany(ctx, []string{secret})
					return err
				}},
			}
			for _, c := range calls {
				start := time.Now()
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := c.call(cctx)
				cancel()
				require.Error(t, err, c.want)
				assert.True(t, strings.HasPrefix(err.Error(), c.want), "%q should start with %q", err, c.want)
				assert.NotContains(t, err.Error(), secret)
				var se *state.Error
				assert.ErrorAs(t, err, &se)
				assert.Less(t, time.Since(start), 5*time.Second, "a refused connection fails fast (within go-redis's retries)")
				if c.want == calls[0].want {
					t.Logf("with Redis down: %v (%s)", err, time.Since(start).Round(time.Millisecond))
				}
			}

			require.NoError(t, r.Restart(ctx))
			// go-redis's pool keeps returning its last dial error until its background redial
			// (about once a second) gets through, so the store comes back within a second or
			// two of Redis, by itself.
			restarted := time.Now()
			var lastErr error
			require.Eventually(t, func() bool {
				_, _, lastErr = s.Get(ctx, "probe")
				return lastErr == nil
			}, 15*time.Second, 20*time.Millisecond, "the store did not come back after the restart: %v", lastErr)
			t.Logf("store usable again %s after the restart", time.Since(restarted).Round(time.Millisecond))
			// The restarted server is empty (no persistence). The table notices that the
			// offsets it saw applied are gone, and refuses to build on the lost state.
			err := tbl.Apply(ctx, 3, es, nil, map[string]int64{"in": 100})
			require.ErrorIs(t, err, state.ErrStateLost)
			var ce *state.ConflictError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, int64(0), ce.Stored)
			t.Logf("first Apply after the restart: %v", err)
			// A new assignment reads the offsets again and starts over from there.
			next, err := tbl.Applied(ctx, "in", 3)
			require.NoError(t, err)
			require.Equal(t, int64(0), next)
			works(t, 2+i)
		})
	}
}

// TestStateRedisFencedWrite plays a slice moving between two nodes: each node's token comes
// from INCR, as a framework-minted fencing token would; the former owner's write is
// rejected, the current owner's passes.
func TestStateRedisFencedWrite(t *testing.T) {
	harness.RequireRedis(t)
	ctx := stateCtx(t, 30*time.Second)
	client := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(t)})
	t.Cleanup(func() { client.Close() })
	ns := stateNamespace(t, client)
	nodeA, err := state.NewTable(client, ns, codec.String(), codec.Int64())
	require.NoError(t, err)
	nodeB, err := state.NewTable(client, ns, codec.String(), codec.Int64())
	require.NoError(t, err)
	tokenKey := ns + ":token"

	tokenA, err := client.Incr(ctx, tokenKey).Result()
	require.NoError(t, err)
	require.NoError(t, nodeA.PutFenced(ctx, 4, "slice-4", tokenA, state.Entry[string, int64]{Key: "printed", Value: 1}))
	tokenB, err := client.Incr(ctx, tokenKey).Result() // the slice moves to B
	require.NoError(t, err)
	require.NoError(t, nodeB.PutFenced(ctx, 4, "slice-4", tokenB, state.Entry[string, int64]{Key: "printed", Value: 2}))

	err = nodeA.PutFenced(ctx, 4, "slice-4", tokenA, state.Entry[string, int64]{Key: "printed", Value: 99})
	require.ErrorIs(t, err, state.ErrFenced)
	var fe *state.FencedError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, state.FencedError{Fence: "slice-4", Partition: 4, Token: tokenA, Highest: tokenB}, *fe)
	require.NoError(t, nodeB.PutFenced(ctx, 4, "slice-4", tokenB, state.Entry[string, int64]{Key: "printed", Value: 3}))
	v, _, err := nodeA.Partition(4).Get(ctx, "printed")
	require.NoError(t, err)
	assert.Equal(t, int64(3), v)
}

// replyCutter is a TCP proxy in front of Redis that can drop one reply and close the
// connection: Redis has run the command, the client sees EOF (an ambiguous write).
type replyCutter struct {
	l      net.Listener
	target string
	armed  atomic.Bool
	cuts   atomic.Int32

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newReplyCutter(t *testing.T, target string) *replyCutter {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &replyCutter{l: l, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *replyCutter) addr() string { return p.l.Addr().String() }

func (p *replyCutter) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(s, c); s.Close() }()
		go func() {
			defer p.wg.Done()
			defer c.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 && p.armed.CompareAndSwap(true, false) {
					p.cuts.Add(1)
					s.Close() // the command ran; its reply is lost with the connection
					return
				}
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (p *replyCutter) close() {
	p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestStateRedisAmbiguousWrite shows go-redis resending a command whose reply was lost
// (EOF), which double-applies a plain INCRBY, and that Apply stays exactly-once through
// the same retry.
func TestStateRedisAmbiguousWrite(t *testing.T) {
	harness.RequireRedis(t)
	ctx := stateCtx(t, 30*time.Second)
	addr := stack.RedisAddr(t)
	proxy := newReplyCutter(t, addr)
	direct := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { direct.Close() })
	ns := stateNamespace(t, direct)

	// Default client settings: MaxRetries 3.
	client := redis.NewClient(&redis.Options{Addr: proxy.addr()})
	t.Cleanup(func() { client.Close() })

	t.Run("INCRBY counts twice", func(t *testing.T) {
		counter := ns + ":counter"
		require.NoError(t, client.Ping(ctx).Err())
		proxy.armed.Store(true)
		n, err := client.IncrBy(ctx, counter, 1).Result()
		require.Equal(t, int32(1), proxy.cuts.Load(), "the proxy cut one reply")
		require.NoError(t, err, "go-redis retried after EOF and reported success")
		got, err := direct.Get(ctx, counter).Int64()
		require.NoError(t, err)
		assert.Equal(t, int64(2), got, "one INCRBY 1, applied twice")
		assert.Equal(t, int64(2), n)
		t.Logf("INCRBY 1 with a lost reply: counter = %d", got)
	})

	t.Run("Apply counts once", func(t *testing.T) {
		proxy.cuts.Store(0)
		tbl, err := state.NewTable(client, ns, codec.String(), codec.Int64())
		require.NoError(t, err)
		_, err = tbl.Applied(ctx, "purchases", 0)
		require.NoError(t, err)
		// Load the script first, so the cut hits the EVALSHA of the batch itself.
		require.NoError(t, tbl.Apply(ctx, 0, []state.Entry[string, int64]{{Key: "total", Value: 1}}, nil, map[string]int64{"purchases": 1}))

		proxy.armed.Store(true)
		err = tbl.Apply(ctx, 0, []state.Entry[string, int64]{{Key: "total", Value: 2}}, nil, map[string]int64{"purchases": 2})
		require.Equal(t, int32(1), proxy.cuts.Load(), "the proxy cut one reply")
		assert.ErrorIs(t, err, state.ErrAlreadyApplied, "go-redis's retry found the batch applied")
		v, _, err := tbl.Partition(0).Get(ctx, "total")
		require.NoError(t, err)
		assert.Equal(t, int64(2), v)
		next, err := tbl.Applied(ctx, "purchases", 0)
		require.NoError(t, err)
		assert.Equal(t, int64(2), next)
		// The writer goes on: its own applied batch is not mistaken for another writer's.
		require.NoError(t, tbl.Apply(ctx, 0, []state.Entry[string, int64]{{Key: "total", Value: 3}}, nil, map[string]int64{"purchases": 3}))
	})

	t.Run("Apply without client retries", func(t *testing.T) {
		proxy.cuts.Store(0)
		noRetry := redis.NewClient(&redis.Options{Addr: proxy.addr(), MaxRetries: -1})
		defer noRetry.Close()
		tbl, err := state.NewTable(noRetry, ns, codec.String(), codec.Int64())
		require.NoError(t, err)
		_, err = tbl.Applied(ctx, "purchases", 0)
		require.NoError(t, err)
		proxy.armed.Store(true)
		err = tbl.Apply(ctx, 0, []state.Entry[string, int64]{{Key: "total", Value: 4}}, nil, map[string]int64{"purchases": 4})
		require.Error(t, err, "the lost reply surfaces")
		assert.NotErrorIs(t, err, state.ErrAlreadyApplied)
		t.Logf("lost reply without retries: %v", err)
		// The caller (the processor's retry policy) tries the batch again.
		err = tbl.Apply(ctx, 0, []state.Entry[string, int64]{{Key: "total", Value: 4}}, nil, map[string]int64{"purchases": 4})
		assert.ErrorIs(t, err, state.ErrAlreadyApplied)
		require.NoError(t, tbl.Apply(ctx, 0, []state.Entry[string, int64]{{Key: "total", Value: 5}}, nil, map[string]int64{"purchases": 5}))
	})
}

// BenchmarkStateRedis compares the stores' batch calls with raw go-redis pipelines of the
// same commands and sizes, against the same server, interleaved call by call so both see
// the same conditions. ratio = raw time / store time (1 = no overhead; target >= 0.8).
//
//	go test -run '^$' -bench StateRedis -benchtime 2000x ./integration/
func BenchmarkStateRedis(b *testing.B) {
	harness.RequireRedis(b)
	addr := stack.RedisAddr(b)
	client := redis.NewClient(&redis.Options{Addr: addr})
	b.Cleanup(func() { client.Close() })
	ns := stateNamespace(b, client)
	store, err := state.NewRedis(client, ns, codec.String(), codec.String())
	require.NoError(b, err)
	tbl, err := state.NewTable(client, ns, codec.String(), codec.String())
	require.NoError(b, err)
	value := strings.Repeat("v", 100)
	var offset atomic.Int64 // the table's applied offset, growing across all sizes

	for _, n := range []int{100, 1000} {
		keys := make([]string, n)
		rawKeys := make([]string, n)
		es := make([]state.Entry[string, string], n)
		for i := range keys {
			keys[i] = fmt.Sprintf("user-%08d", i)
			rawKeys[i] = ns + ".raw:" + keys[i]
			es[i] = state.Entry[string, string]{Key: keys[i], Value: value}
		}
		ctx := context.Background()
		// The raw calls build their keys per call, as a handler prefixing its records' keys
		// would; they skip the codecs.
		rawPrefix := ns + ".raw:"
		rawPut := func() error {
			pipe := client.Pipeline()
			for _, k := range keys {
				pipe.Set(ctx, rawPrefix+k, value, 0)
			}
			_, err := pipe.Exec(ctx)
			return err
		}
		rawGet := func() error {
			pipe := client.Pipeline()
			cmds := make([]*redis.StringCmd, len(keys))
			for i, k := range keys {
				cmds[i] = pipe.Get(ctx, rawPrefix+k)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			for _, c := range cmds {
				if c.Val() == "" {
					return errors.New("missing value")
				}
			}
			return nil
		}
		require.NoError(b, rawPut())
		require.NoError(b, store.PutMany(ctx, es))
		b.Cleanup(func() { client.Del(context.Background(), rawKeys...) })

		cases := []struct {
			name  string
			store func() error
			raw   func() error
		}{
			{"PutMany", func() error { return store.PutMany(ctx, es) }, rawPut},
			{"GetMany", func() error {
				_, found, err := store.GetMany(ctx, keys)
				if err == nil && !found[n-1] {
					err = errors.New("missing value")
				}
				return err
			}, rawGet},
			// Apply is one script (writes + offsets, atomic); compared with the plain pipeline.
			{"TableApply", func() error {
				return tbl.Apply(ctx, 0, es, nil, map[string]int64{"in": offset.Add(1)})
			}, rawPut},
			{"TableGetMany", func() error { _, _, err := tbl.Partition(0).GetMany(ctx, keys); return err }, rawGet},
		}
		for _, c := range cases {
			b.Run(fmt.Sprintf("%s/%d", c.name, n), func(b *testing.B) {
				var storeTime, rawTime time.Duration
				calls := 0
				for b.Loop() {
					i := calls
					calls++
					// Alternate which goes first, so neither always finds a warm connection.
					first, second := c.store, c.raw
					if i%2 == 1 {
						first, second = c.raw, c.store
					}
					t0 := time.Now()
					if err := first(); err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					if err := second(); err != nil {
						b.Fatal(err)
					}
					t2 := time.Now()
					if i%2 == 0 {
						storeTime, rawTime = storeTime+t1.Sub(t0), rawTime+t2.Sub(t1)
					} else {
						rawTime, storeTime = rawTime+t1.Sub(t0), storeTime+t2.Sub(t1)
					}
				}
				b.ReportMetric(float64(storeTime.Microseconds())/float64(calls), "store-µs/call")
				b.ReportMetric(float64(rawTime.Microseconds())/float64(calls), "raw-µs/call")
				b.ReportMetric(float64(n*calls)/storeTime.Seconds(), "store-keys/s")
				b.ReportMetric(rawTime.Seconds()/storeTime.Seconds(), "ratio")
			})
		}
	}
}

// Update state and emit, on the real broker and Redis: a handler keeps a count per key
// in a checkpointed state.Table and sends, for each record, its key's count after it.
// Whatever happens to the outputs, the table and the output topic agree afterwards: each
// key's outputs are exactly the counts 1..n (at least once each), n being the table's
// count, which is the number of the key's records that were not dead-lettered.

// countEach is the handler: each record's key's count after it goes to out. Records
// whose value is "big" get an output value of 8,000 bytes.
func countEach(tbl *state.Table[string, int64], out processor.Output[string, string]) processor.Handler[string, string] {
	return processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
		return foldKeys(ctx, tbl, b, func(r processor.Record[string, string], count *int64) error {
			*count++
			v := fmt.Sprint(*count)
			if r.Value == "big" {
				v += ":" + strings.Repeat("x", 8000)
			}
			return out.Send(b, r.Key, v)
		})
	})
}

// stateOutputsRun runs countEach until the group committed `until` records of in (2
// partitions) or Run returns, and returns Run's error and how long it ran.
func stateOutputsRun(t *testing.T, brokers, group, in string, tbl *state.Table[string, int64], out string, pol processor.Policy, until int64) (error, time.Duration) {
	t.Helper()
	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: group, ErrorPolicy: pol, BatchSize: 25, CommitInterval: 100 * time.Millisecond},
		[]processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
		countEach(tbl, processor.NewOutput(out, codec.String(), codec.String())), processor.WithCheckpoint(tbl))
	require.NoError(t, err)
	return runUntil(p.Run, 2*time.Minute, 100*time.Millisecond, progressReached(t, brokers, group, in, until))
}

// assertStateAndOutputsAgree checks the table against want (count per key) and that
// each key's outputs on out include the counts 1..want[key]; exact: and no others.
func assertStateAndOutputsAgree(t *testing.T, brokers string, tbl *state.Table[string, int64], out string, want map[string]int64, exact bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := map[string]int64{}
	for k := range want {
		n, _, err := tbl.Lookup(ctx, 2, k)
		require.NoError(t, err)
		got[k] = n
	}
	assert.Equal(t, want, got, "the table's count per key")
	outs, err := samsatest.ReadAll(ctx, brokers, out, codec.String(), codec.String())
	require.NoError(t, err)
	sent := map[string]map[string]bool{}
	for _, r := range outs {
		if sent[r.Key] == nil {
			sent[r.Key] = map[string]bool{}
		}
		sent[r.Key][r.Value] = true
	}
	for k, n := range want {
		exp := map[string]bool{}
		for i := int64(1); i <= n; i++ {
			exp[fmt.Sprint(i)] = true
		}
		if exact {
			assert.Equal(t, exp, sent[k], "the counts sent for %s", k)
			continue
		}
		for c := range exp {
			assert.True(t, sent[k][c], "count %s of %s was never sent", c, k)
		}
	}
	t.Logf("%d outputs for %d records counted", len(outs), sum(want))
}

func sum(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

// A newcomer's orders→totals processor started before its output topic exists: Run fails
// naming the topic, the table applies nothing and the group commits nothing; once the
// topic exists the rerun handles every record, and the table and the outputs agree.
// (Before state effects were staged, the table recorded the failed batches as applied,
// the rerun skipped them, and the output topic stayed empty.)
func TestCheckpointedStateMissingOutputTopicThenRestart(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	rdb := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(t)})
	t.Cleanup(func() { rdb.Close() })
	in, out, group := stack.UniqueName("so-in"), stack.UniqueName("so-totals"), stack.UniqueName("so")
	harness.CreateTopic(t, brokers, in, 2, 1)
	tbl, err := state.NewTable(rdb, stateNamespace(t, rdb), codec.String(), codec.Int64())
	require.NoError(t, err)
	const n = 300
	recs := make([]samsatest.KV[string, string], n)
	want := map[string]int64{}
	for i := range recs {
		recs[i] = samsatest.KV[string, string]{Key: fmt.Sprintf("c%d", i%7), Value: "order"}
		want[recs[i].Key]++
	}
	samsatest.Produce(t, brokers, processor.NewOutput(in, codec.String(), codec.String()), recs...)

	err, took := stateOutputsRun(t, brokers, group, in, tbl, out, processor.Stop(), n)
	t.Logf("without the output topic, Run returned after %s: %v", took.Round(time.Millisecond), err)
	require.Error(t, err)
	assert.Contains(t, err.Error(), out, "the error names the output topic")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for p := range int32(2) {
		a, err := tbl.Applied(ctx, in, p)
		require.NoError(t, err)
		assert.Zero(t, a, "partition %d: no batch applied whose outputs were never acknowledged", p)
	}
	assert.Equal(t, map[int32]int64{}, nonZero(harness.CommittedOffsets(t, brokers, group, in, 2)), "nothing committed")

	harness.CreateTopic(t, brokers, out, 2, 1)
	err, took = stateOutputsRun(t, brokers, group, in, tbl, out, processor.Stop(), n)
	require.NoError(t, err)
	t.Logf("with the topic, the rerun committed all %d records in %s", n, took.Round(time.Millisecond))
	assertStateAndOutputsAgree(t, brokers, tbl, out, want, true)
}

// Outputs the broker refuses (over the output topic's max.message.bytes) under
// DeadLetter: each batch holding a refused output is dead-lettered whole and applies
// none of its state effects, the other batches apply theirs, so the table counts exactly
// the records that were not dead-lettered and the outputs agree with it; redriving the
// dead letters (without the oversize value) then counts every record once.
func TestCheckpointedStateRefusedOutputsDeadLettered(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	rdb := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(t)})
	t.Cleanup(func() { rdb.Close() })
	in, out, dlq, group := stack.UniqueName("sr-in"), stack.UniqueName("sr-totals"), stack.UniqueName("sr-dlq"), stack.UniqueName("sr")
	harness.CreateTopic(t, brokers, in, 2, 1)
	harness.CreateTopic(t, brokers, dlq, 1, 1)
	harness.CreateTopicConfig(t, brokers, out, 2, 1, map[string]string{"max.message.bytes": "2000"})
	tbl, err := state.NewTable(rdb, stateNamespace(t, rdb), codec.String(), codec.Int64())
	require.NoError(t, err)
	const n = 400
	recs := make([]samsatest.KV[string, string], n)
	all := map[string]int64{}
	for i := range recs {
		v := "order"
		if i%97 == 5 {
			v = "big"
		}
		recs[i] = samsatest.KV[string, string]{Key: fmt.Sprintf("c%d", i%7), Value: v}
		all[recs[i].Key]++
	}
	inOut := processor.NewOutput(in, codec.String(), codec.String())
	samsatest.Produce(t, brokers, inOut, recs...)

	err, _ = stateOutputsRun(t, brokers, group, in, tbl, out, processor.DeadLetter(dlq), n)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	letters, err := samsatest.ReadAll(ctx, brokers, dlq, codec.String(), codec.String())
	require.NoError(t, err)
	lettered := map[string]int64{}
	bigs := 0
	for _, l := range letters {
		lettered[l.Key]++
		if l.Value == "big" {
			bigs++
		}
	}
	assert.Equal(t, 5, bigs, "every record with a refused output is dead-lettered")
	assert.Greater(t, len(letters), bigs, "with their batches")
	left := map[string]int64{}
	for k, c := range all {
		left[k] = c - lettered[k]
	}
	t.Logf("%d records dead-lettered (%d with refused outputs)", len(letters), bigs)
	// Outputs of a dead-lettered batch that the broker acknowledged before the refusal
	// stay on the topic (at least once): the counts sent include the table's.
	assertStateAndOutputsAgree(t, brokers, tbl, out, left, false)

	// Redrive without the oversize values: every record is counted once.
	redrive := make([]samsatest.KV[string, string], len(letters))
	for i, l := range letters {
		redrive[i] = samsatest.KV[string, string]{Key: l.Key, Value: "order"}
	}
	samsatest.Produce(t, brokers, inOut, redrive...)
	err, _ = stateOutputsRun(t, brokers, group, in, tbl, out, processor.DeadLetter(dlq), int64(n+len(redrive)))
	require.NoError(t, err)
	assertStateAndOutputsAgree(t, brokers, tbl, out, all, true)
	assert.Equal(t, map[int32]int64{0: int64(len(letters))}, harness.EndOffsets(t, brokers, dlq, 1), "nothing more dead-lettered")
}

// A checkpointed Table whose Redis keys are lost (as when Redis restarts without
// persistence) is detected when its partitions are next assigned: the group's commits
// recorded the applied offsets, the table reports less, and Run fails naming the
// partition instead of resuming from the committed offsets on empty state.
func TestTableLostWritesDetectedAtAssignment(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	rdb := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(t)})
	t.Cleanup(func() { rdb.Close() })
	in, group := stack.UniqueName("lost-in"), stack.UniqueName("lost")
	ns := stack.UniqueName("lost.ns")
	harness.CreateTopic(t, brokers, in, 2, 1)
	recs := make([]samsatest.KV[string, string], 300)
	for i := range recs {
		recs[i] = samsatest.KV[string, string]{Key: fmt.Sprintf("k%d", i%11), Value: "x"}
	}
	samsatest.Produce(t, brokers, processor.NewOutput(in, codec.String(), codec.String()), recs...)

	run := func(stopAt int64) error {
		tbl, err := state.NewTable(rdb, ns, codec.String(), codec.Int64())
		require.NoError(t, err)
		p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: group, CommitInterval: 100 * time.Millisecond},
			[]processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
			processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
				puts := make([]state.Entry[string, int64], 0, len(b.Records))
				for _, r := range b.Records {
					puts = append(puts, state.Entry[string, int64]{Key: r.Key, Value: r.Offset})
				}
				if err := tbl.Apply(ctx, b.Partition, puts, nil, b.NextOffsets()); err != nil && !errors.Is(err, state.ErrAlreadyApplied) {
					return err
				}
				return nil
			}), processor.WithCheckpoint(tbl))
		require.NoError(t, err)
		err, _ = runUntil(p.Run, time.Minute, 50*time.Millisecond, progressReached(t, brokers, group, in, stopAt))
		return err
	}
	require.NoError(t, run(300))

	// Redis loses the table's keys.
	keys, err := rdb.Keys(context.Background(), "{"+ns+"*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys, "the table wrote nothing under its namespace")
	require.NoError(t, rdb.Del(context.Background(), keys...).Err())

	start := time.Now()
	err = run(1 << 62)
	t.Logf("restarted on the emptied table: Run returned after %s: %v", time.Since(start).Round(time.Millisecond), err)
	require.Error(t, err)
	assert.ErrorIs(t, err, processor.ErrCheckpointBehind)
	assert.Contains(t, err.Error(), in+"[")
	c := harness.CommittedOffsets(t, brokers, group, in, 2)
	assert.EqualValues(t, 300, c[0]+c[1], "nothing more committed")
}
