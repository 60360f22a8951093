package view_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/internal/testlog"
	"github.com/samsa-go/samsa/processor/view"
)

// These tests run on the embedded broker: fast, no setup. integration/view_test.go runs
// a View against real Kafka with a million records.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// librdkafka's cgo callbacks park goroutines in the runtime briefly after Close.
		goleak.IgnoreTopFunction("github.com/confluentinc/confluent-kafka-go/v2/kafka.(*handle).cleanup"),
		// go-redis's pool reaper of the Redis test's client.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
	)
}

func startBroker(t testing.TB, topics ...embedded.Topic) string {
	t.Helper()
	b, err := embedded.Start(topics...)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b.Bootstrap()
}

// rec is a record to produce; a nil value is a tombstone.
type rec struct {
	key   []byte
	value []byte
}

func str(k, v string) rec { return rec{key: []byte(k), value: []byte(v)} }

// partitionOf spreads keys over partitions by their bytes, as a keyed producer would.
func partitionOf(key []byte, partitions int) int32 {
	h := fnv.New32a()
	_, _ = h.Write(key)
	return int32(h.Sum32() % uint32(partitions))
}

// produce writes recs to topic, each key to its partition, and waits for every
// acknowledgement.
func produce(t testing.TB, brokers, topic string, partitions int, recs ...rec) {
	t.Helper()
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3, "linger.ms": 5})
	require.NoError(t, err)
	defer p.Close()
	dr := make(chan kafka.Event, len(recs))
	for _, r := range recs {
		part := int32(0)
		if r.key != nil {
			part = partitionOf(r.key, partitions)
		}
		require.NoError(t, p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: part},
			Key: r.key, Value: r.value}, dr))
	}
	timeout := time.After(30 * time.Second)
	for range recs {
		select {
		case ev := <-dr:
			require.NoError(t, ev.(*kafka.Message).TopicPartition.Error)
		case <-timeout:
			t.Fatal("delivery timeout")
		}
	}
}

// run starts v.Run and returns a stop that cancels it and returns its error, bounded.
func run[K, V any](t testing.TB, v *view.View[K, V]) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- v.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(20 * time.Second):
				err = errors.New("Run did not return within 20s of its context ending")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func waitReady[K, V any](t testing.TB, v *view.View[K, V]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, v.WaitReady(ctx))
}

func newStringView(t testing.TB, cfg view.Config, topic string, opts ...view.Option) *view.View[string, string] {
	t.Helper()
	v, err := view.New(cfg, topic, codec.String(), codec.String(), opts...)
	require.NoError(t, err)
	return v
}

func TestRestoreFollowTombstones(t *testing.T) {
	const parts = 4
	brokers := startBroker(t, embedded.Topic{Name: "users", Partitions: parts})
	want := map[string]string{}
	var recs []rec
	for i := range 2000 {
		k, val := fmt.Sprintf("k%03d", i%300), fmt.Sprintf("v%d", i)
		recs = append(recs, str(k, val))
		want[k] = val
	}
	// Tombstones for some keys, and a key written again after its tombstone.
	for i := range 20 {
		k := fmt.Sprintf("k%03d", i)
		recs = append(recs, rec{key: []byte(k)})
		delete(want, k)
	}
	recs = append(recs, str("k000", "again"))
	want["k000"] = "again"
	produce(t, brokers, "users", parts, recs...)

	v := newStringView(t, view.Config{Brokers: brokers, LagInterval: 20 * time.Millisecond}, "users")
	_, _, err := v.Get("k000")
	require.ErrorIs(t, err, view.ErrNotReady, "Get before Run")
	stop := run(t, v)
	waitReady(t, v)

	pr := v.Progress()
	assert.True(t, pr.Ready)
	assert.Equal(t, parts, pr.Partitions)
	assert.Equal(t, parts, pr.Restored)
	assert.Equal(t, int64(len(recs)), pr.Target)
	assert.Equal(t, pr.Target, pr.Read)
	assert.Equal(t, int64(len(want)), v.Len())
	assert.Equal(t, int64(len(want)), pr.Keys)
	assert.Positive(t, pr.Bytes)
	checkAll(t, v, want, 300)

	// Following: updates, new keys and tombstones show within the View's lag.
	produce(t, brokers, "users", parts, str("k100", "updated"), str("new", "fresh"), rec{key: []byte("k200")})
	require.Eventually(t, func() bool {
		a, _, _ := v.Get("k100")
		b, _, _ := v.Get("new")
		_, found, _ := v.Get("k200")
		return a == "updated" && b == "fresh" && !found
	}, 10*time.Second, 10*time.Millisecond, "updates not visible")
	for p, l := range v.Lag() {
		assert.Zero(t, l, "lag of partition %d", p)
	}
	require.NoError(t, stop())
	_, _, err = v.Get("k100")
	assert.ErrorIs(t, err, view.ErrClosed, "Get after Run returned")
	assert.ErrorIs(t, v.Run(context.Background()), view.ErrClosed, "Run is single-use")
}

// checkAll checks that every key among k000..k<n-1> has its wanted value or is absent.
func checkAll(t *testing.T, v *view.View[string, string], want map[string]string, n int) {
	t.Helper()
	for i := range n {
		k := fmt.Sprintf("k%03d", i)
		got, found, err := v.Get(k)
		require.NoError(t, err)
		w, ok := want[k]
		assert.Equal(t, ok, found, "key %s found", k)
		assert.Equal(t, w, got, "key %s", k)
	}
}

func TestReadyEmptyTopic(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "empty", Partitions: 3})
	v := newStringView(t, view.Config{Brokers: brokers, LagInterval: 20 * time.Millisecond}, "empty")
	select {
	case <-v.Ready():
		t.Fatal("ready before Run")
	default:
	}
	run(t, v)
	select {
	case <-v.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("an empty topic's View not ready within 30s")
	}
	_, found, err := v.Get("x")
	require.NoError(t, err)
	assert.False(t, found)
	pr := v.Progress()
	assert.Equal(t, 3, pr.Restored)
	assert.Zero(t, pr.Target)

	produce(t, brokers, "empty", 3, str("x", "1"))
	require.Eventually(t, func() bool { got, _, _ := v.Get("x"); return got == "1" }, 10*time.Second, 10*time.Millisecond)
}

func TestRestoreWaitsForItsEnd(t *testing.T) {
	// Ready means every record written before Run started is visible.
	const parts = 2
	brokers := startBroker(t, embedded.Topic{Name: "t", Partitions: parts})
	var recs []rec
	for i := range 5000 {
		recs = append(recs, str(fmt.Sprintf("k%03d", i%500), strconv.Itoa(i)))
	}
	produce(t, brokers, "t", parts, recs...)
	v := newStringView(t, view.Config{Brokers: brokers, WriteBatch: 7}, "t")
	run(t, v)
	waitReady(t, v)
	for i := 4500; i < 5000; i++ {
		got, found, err := v.Get(fmt.Sprintf("k%03d", i%500))
		require.NoError(t, err)
		require.True(t, found)
		require.Equal(t, strconv.Itoa(i), got)
	}
}

func TestDecodeFailureSkipped(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "nums", Partitions: 1})
	i64 := func(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }
	produce(t, brokers, "nums", 1,
		rec{key: []byte("a"), value: i64(1)},
		rec{key: []byte("a"), value: []byte("bad")}, // value does not decode: a keeps 1
		rec{key: nil, value: i64(2)},                // null key: cannot be looked up
		rec{key: []byte("b"), value: i64(3)},
	)
	var logs testlog.Buffer
	v, err := view.New(view.Config{Brokers: brokers, LagInterval: 20 * time.Millisecond}, "nums", codec.String(), codec.Int64(),
		view.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.NoError(t, err)
	run(t, v)
	waitReady(t, v)
	assert.Contains(t, logs.String(), `msg="view: record skipped" topic=nums partition=0 offset=1 reason=value`)
	assert.Contains(t, logs.String(), `msg="view: record skipped" topic=nums partition=0 offset=2 reason="null key"`)
	assert.NotContains(t, logs.String(), "bad", "no payload in the logs")
	got, found, err := v.Get("a")
	require.NoError(t, err)
	assert.True(t, found)
	assert.Equal(t, int64(1), got)
	got, _, _ = v.Get("b")
	assert.Equal(t, int64(3), got)
	pr := v.Progress()
	assert.Equal(t, int64(2), pr.Skipped)
	assert.Equal(t, int64(4), pr.Read, "skipped records count as read")
	assert.Equal(t, int64(2), v.Len())
}

func TestMemoryBound(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "big", Partitions: 2})
	var recs []rec
	for i := range 200 {
		recs = append(recs, str(fmt.Sprintf("k%03d", i), string(make([]byte, 100))))
	}
	produce(t, brokers, "big", 2, recs...)
	// 200 entries take 200 × (4 + 100 + EntryOverhead) bytes; allow half of that.
	limit := int64(100 * (4 + 100 + view.EntryOverhead))
	v := newStringView(t, view.Config{Brokers: brokers, MaxBytes: limit}, "big")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := v.Run(ctx)
	require.ErrorIs(t, err, view.ErrMemoryBound)
	t.Logf("Run: %v", err)
	msg := err.Error()
	assert.Contains(t, msg, "MaxBytes ("+strconv.FormatInt(limit, 10)+")")
	assert.Contains(t, msg, "Config.Redis")
	assert.Contains(t, msg, `"big"`)
	assert.ErrorIs(t, v.WaitReady(ctx), view.ErrMemoryBound, "WaitReady returns Run's error")
	select {
	case <-v.Ready():
		t.Fatal("ready after failing")
	default:
	}

	// Overwrites and deletes give the bytes back: the same table fits when half the
	// keys are deleted again before the end.
	brokers = startBroker(t, embedded.Topic{Name: "churn", Partitions: 1})
	recs = recs[:0]
	for i := range 200 {
		k := fmt.Sprintf("k%03d", i)
		recs = append(recs, str(k, string(make([]byte, 100))))
		if i%2 == 0 {
			recs = append(recs, rec{key: []byte(k)})
		}
	}
	produce(t, brokers, "churn", 1, recs...)
	v = newStringView(t, view.Config{Brokers: brokers, MaxBytes: limit}, "churn")
	run(t, v)
	waitReady(t, v)
	assert.Equal(t, int64(100), v.Len())
	assert.Equal(t, limit, v.Progress().Bytes)
}

func TestMemoryBoundWhileFollowing(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "t", Partitions: 1})
	produce(t, brokers, "t", 1, str("a", "1"))
	v := newStringView(t, view.Config{Brokers: brokers, MaxBytes: 1000}, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- v.Run(ctx) }()
	waitReady(t, v)
	produce(t, brokers, "t", 1, str("b", string(make([]byte, 1000))))
	select {
	case err := <-errc:
		require.ErrorIs(t, err, view.ErrMemoryBound)
		assert.Contains(t, err.Error(), "over Config.MaxBytes (1000)")
	case <-ctx.Done():
		t.Fatal("Run did not fail at its memory bound")
	}
	_, _, err := v.Get("a")
	assert.ErrorIs(t, err, view.ErrClosed)
}

func TestRestartRestores(t *testing.T) {
	const parts = 3
	brokers := startBroker(t, embedded.Topic{Name: "t", Partitions: parts})
	want := map[string]string{}
	var recs []rec
	for i := range 900 {
		k, val := fmt.Sprintf("k%03d", i%100), strconv.Itoa(i)
		recs = append(recs, str(k, val))
		want[k] = val
	}
	produce(t, brokers, "t", parts, recs...)
	cfg := view.Config{Brokers: brokers, LagInterval: 20 * time.Millisecond}
	v1 := newStringView(t, cfg, "t")
	stop := run(t, v1)
	waitReady(t, v1)
	produce(t, brokers, "t", parts, str("k001", "while-running"), rec{key: []byte("k002")})
	want["k001"] = "while-running"
	delete(want, "k002")
	require.Eventually(t, func() bool { got, _, _ := v1.Get("k001"); return got == "while-running" }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, stop())

	v2 := newStringView(t, cfg, "t")
	run(t, v2)
	waitReady(t, v2)
	checkAll(t, v2, want, 100)
	assert.Equal(t, int64(len(want)), v2.Len())
}

func TestConcurrentGet(t *testing.T) {
	const parts = 4
	brokers := startBroker(t, embedded.Topic{Name: "t", Partitions: parts})
	var recs []rec
	for i := range 200 {
		recs = append(recs, str(fmt.Sprintf("k%03d", i), "0"))
	}
	produce(t, brokers, "t", parts, recs...)
	v := newStringView(t, view.Config{Brokers: brokers, LagInterval: 5 * time.Millisecond, WriteBatch: 3}, "t")
	run(t, v)
	waitReady(t, v)

	// Readers check that a key's value never goes backwards while a writer raises it.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var gets atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			last := map[string]int{}
			for i := g; ctx.Err() == nil; i++ {
				k := fmt.Sprintf("k%03d", i%200)
				got, found, err := v.Get(k)
				if !assert.NoError(t, err) || !assert.True(t, found, k) {
					return
				}
				n, _ := strconv.Atoi(got)
				assert.GreaterOrEqual(t, n, last[k], "key %s went back", k)
				last[k] = n
				gets.Add(1)
				_ = v.Lag()
				_ = v.Progress()
			}
		})
	}
	for round := 1; round <= 5; round++ {
		recs = recs[:0]
		for i := range 200 {
			recs = append(recs, str(fmt.Sprintf("k%03d", i), strconv.Itoa(round)))
		}
		produce(t, brokers, "t", parts, recs...)
	}
	require.Eventually(t, func() bool {
		for i := range 200 {
			if got, _, _ := v.Get(fmt.Sprintf("k%03d", i)); got != "5" {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	wg.Wait()
	assert.Positive(t, gets.Load())
}

func TestMissingTopic(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "other", Partitions: 1})
	v := newStringView(t, view.Config{Brokers: brokers, StartTimeout: 5 * time.Second}, "missing")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := v.Run(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"missing"`)
	assert.Contains(t, err.Error(), "does not exist")
	assert.ErrorIs(t, v.WaitReady(ctx), err)
}

func TestTopicDeletedWhileFollowing(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "t", Partitions: 2})
	produce(t, brokers, "t", 2, str("a", "1"))
	v := newStringView(t, view.Config{Brokers: brokers, LagInterval: 20 * time.Millisecond}, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- v.Run(ctx) }()
	waitReady(t, v)
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	require.NoError(t, err)
	defer ac.Close()
	res, err := ac.DeleteTopics(ctx, []string{"t"})
	require.NoError(t, err)
	require.Equal(t, kafka.ErrNoError, res[0].Error.Code())
	select {
	case err := <-errc:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "does not exist")
	case <-ctx.Done():
		t.Fatal("Run did not fail after its topic was deleted")
	}
}

func TestHTTP(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "t", Partitions: 1})
	produce(t, brokers, "t", 1, str("alice", "42"))
	v := newStringView(t, view.Config{Brokers: brokers}, "t")
	srv := httptest.NewServer(v)
	defer srv.Close()
	get := func(q string) (int, string) {
		resp, err := http.Get(srv.URL + q)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, _ := get("/?key=alice")
	assert.Equal(t, http.StatusServiceUnavailable, code, "before ready")
	run(t, v)
	waitReady(t, v)
	code, body := get("/?key=alice")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "42", body)
	code, _ = get("/?key=bob")
	assert.Equal(t, http.StatusNotFound, code)
	code, _ = get("/")
	assert.Equal(t, http.StatusBadRequest, code)
	resp, err := http.Post(srv.URL+"/?key=alice", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	// A binary key codec takes a parser.
	produce(t, brokers, "t", 1, rec{key: binary.BigEndian.AppendUint64(nil, 7), value: []byte("seven")})
	iv, err := view.New(view.Config{Brokers: brokers}, "t", codec.Int64(), codec.String(),
		view.WithKeyParser(func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }))
	require.NoError(t, err)
	run(t, iv)
	waitReady(t, iv)
	rr := httptest.NewRecorder()
	iv.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/?key=7", nil))
	assert.Equal(t, http.StatusOK, rr.Code)
	assert.Equal(t, "seven", rr.Body.String())
	rr = httptest.NewRecorder()
	iv.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/?key=x", nil))
	assert.Equal(t, http.StatusBadRequest, rr.Code)

	_, err = view.New(view.Config{Brokers: brokers}, "t", codec.Int64(), codec.String(),
		view.WithKeyParser(func(s string) (string, error) { return s, nil }))
	assert.ErrorContains(t, err, "WithKeyParser")
}

func TestConfigValidate(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rc.Close()
	for _, tc := range []struct {
		name string
		cfg  view.Config
		want []string
	}{
		{"ok", view.Config{Brokers: "b:9092"}, nil},
		{"no brokers", view.Config{}, []string{"Brokers is required"}},
		{"negative", view.Config{Brokers: "b", MaxBytes: -1, LagInterval: -1, WriteBatch: -1, StartTimeout: -1},
			[]string{"MaxBytes", "LagInterval", "WriteBatch", "StartTimeout"}},
		{"owned override", view.Config{Brokers: "b", Overrides: map[string]any{"group.id": "g"}}, []string{`Overrides["group.id"]`}},
		{"redis without prefix", view.Config{Brokers: "b", Redis: rc}, []string{"RedisPrefix is required"}},
		{"prefix without redis", view.Config{Brokers: "b", RedisPrefix: "p:"}, []string{"Redis is nil"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == nil {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tc.want {
				assert.ErrorContains(t, err, w)
			}
		})
	}
	_, err := view.New[string, string](view.Config{}, "", nil, nil)
	require.Error(t, err)
	for _, w := range []string{"Brokers", "topic is required", "key codec"} {
		assert.ErrorContains(t, err, w)
	}
}

func TestLagMetric(t *testing.T) {
	brokers := startBroker(t, embedded.Topic{Name: "t", Partitions: 2})
	produce(t, brokers, "t", 2, str("a", "1"), str("b", "2"), rec{key: nil, value: []byte("x")})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	v := newStringView(t, view.Config{Brokers: brokers}, "t", view.WithMeterProvider(mp))
	run(t, v)
	waitReady(t, v)
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	seen := map[string]int{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				seen[m.Name] = len(d.DataPoints)
			case metricdata.Sum[int64]:
				seen[m.Name] = len(d.DataPoints)
			}
		}
	}
	assert.Equal(t, 2, seen["samsa.view.lag"], "one lag point per partition")
	assert.Equal(t, 1, seen["samsa.view.keys"])
	assert.Equal(t, 1, seen["samsa.view.bytes"])
	assert.Equal(t, 1, seen["samsa.view.records.skipped"])
}

// redisClient returns a client of $REDIS_ADDR (make test sets it), or skips the test
// saying why when it is unset; a set address that does not answer fails the test.
func redisClient(t testing.TB) redis.UniversalClient {
	t.Helper()
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		t.Skip("REDIS_ADDR is not set: the Redis store is tested against a running Redis (go run ./integration/cmd/stack run -- go test ./processor/view/)")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		t.Fatalf("Redis at REDIS_ADDR=%s does not answer: %v", addr, err) // set, so meant to be tested
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRedisStore(t *testing.T) {
	rc := redisClient(t)
	const parts = 3
	brokers := startBroker(t, embedded.Topic{Name: "t", Partitions: parts})
	want := map[string]string{}
	var recs []rec
	for i := range 1500 {
		k, val := fmt.Sprintf("k%03d", i%200), strconv.Itoa(i)
		recs = append(recs, str(k, val))
		want[k] = val
	}
	for i := range 10 {
		recs = append(recs, rec{key: []byte(fmt.Sprintf("k%03d", i))})
		delete(want, fmt.Sprintf("k%03d", i))
	}
	produce(t, brokers, "t", parts, recs...)
	prefix := fmt.Sprintf("viewtest:%d:", time.Now().UnixNano())
	// A stale key from an earlier run is cleared at start.
	require.NoError(t, rc.HSet(context.Background(), prefix+"0", "stale", "x").Err())
	cfg := view.Config{Brokers: brokers, Redis: rc, RedisPrefix: prefix, WriteBatch: 50, LagInterval: 20 * time.Millisecond}
	v := newStringView(t, cfg, "t")
	stop := run(t, v)
	waitReady(t, v)
	checkAll(t, v, want, 200)
	assert.Equal(t, int64(len(want)), v.Len())
	assert.Zero(t, v.Progress().Bytes)
	n, err := rc.HExists(context.Background(), prefix+"0", "stale").Result()
	require.NoError(t, err)
	assert.False(t, n, "stale key cleared")

	produce(t, brokers, "t", parts, str("k100", "updated"), rec{key: []byte("k101")})
	require.Eventually(t, func() bool {
		a, _, _ := v.Get("k100")
		_, found, _ := v.Get("k101")
		return a == "updated" && !found
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, stop())

	// A second View on the same prefix restores the same table.
	want["k100"] = "updated"
	delete(want, "k101")
	v2 := newStringView(t, cfg, "t")
	run(t, v2)
	waitReady(t, v2)
	checkAll(t, v2, want, 200)
	assert.Equal(t, int64(len(want)), v2.Len())
	t.Cleanup(func() {
		for b := range 64 {
			rc.Del(context.Background(), prefix+strconv.Itoa(b))
		}
	})
}
