package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor/view"
)

// TestView restores a View of a compacted topic of 8 partitions holding 1M records
// (200k keys, each written five times, some deleted), checks every key against what
// was produced last, follows updates (each visible within a bounded time), checks the
// View's memory against its bound with its own count and the Go heap, and restores the
// same table in a second View.
func TestView(t *testing.T) {
	harness.RequireReal(t)
	const (
		partitions = 8
		keys       = 200_000
		records    = 1_000_000
		deletes    = 2_000
		maxBytes   = 64 << 20
	)
	brokers := stack.KafkaBrokers(t)
	topic := stack.UniqueName("view")
	createCompactedTopic(t, brokers, topic, partitions)
	want := produceTable(t, brokers, topic, keys, records, deletes)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	cfg := view.Config{Brokers: brokers, MaxBytes: maxBytes}
	v := startView(t, cfg, topic, 90*time.Second)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	pr := v.Progress()
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("view: restored %d offsets (%d keys, %d skipped) over %d partitions in %s; counted %d bytes of MaxBytes %d (%.1f per key); Go heap grew %d bytes (%.1f per key), heap in use %d",
		pr.Read, pr.Keys, pr.Skipped, pr.Partitions, pr.Elapsed.Round(time.Millisecond), pr.Bytes, int64(maxBytes), float64(pr.Bytes)/float64(pr.Keys),
		heap, float64(heap)/float64(pr.Keys), after.HeapInuse)
	assert.Equal(t, int64(len(want)), v.Len())
	assert.Equal(t, int64(0), pr.Skipped)
	assert.LessOrEqual(t, pr.Bytes, int64(maxBytes))
	// The count is meant to be an upper estimate of what the table takes in the heap.
	assert.LessOrEqual(t, heap, pr.Bytes, "the table takes more heap than the View counts")
	followAndRestart(t, cfg, topic, v, want, keys, 2_000)
}

// TestViewRedis is TestView with the table in Redis, on 100k records.
func TestViewRedis(t *testing.T) {
	harness.RequireReal(t)
	harness.RequireRedis(t)
	const (
		partitions = 8
		keys       = 20_000
		records    = 100_000
		deletes    = 500
	)
	brokers := stack.KafkaBrokers(t)
	rc := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(t)})
	t.Cleanup(func() { rc.Close() })
	topic := stack.UniqueName("view-redis")
	createCompactedTopic(t, brokers, topic, partitions)
	want := produceTable(t, brokers, topic, keys, records, deletes)
	prefix := topic + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for b := range 64 {
			rc.Unlink(ctx, prefix+strconv.Itoa(b))
		}
	})

	cfg := view.Config{Brokers: brokers, Redis: rc, RedisPrefix: prefix}
	v := startView(t, cfg, topic, 90*time.Second)
	pr := v.Progress()
	t.Logf("view-redis: restored %d offsets (%d keys) into Redis in %s", pr.Read, pr.Keys, pr.Elapsed.Round(time.Millisecond))
	assert.Equal(t, int64(len(want)), v.Len())
	followAndRestart(t, cfg, topic, v, want, keys, 1_000)
}

// followAndRestart checks every key of the restored View v, follows updates updates,
// stops v, and checks that a new View restores the same table, updates included.
func followAndRestart(t *testing.T, cfg view.Config, topic string, v *runningView, want map[string]string, keys, updates int) {
	t.Helper()
	checkView(t, v, want, keys)
	followUpdates(t, cfg.Brokers, topic, v, want, updates, 10*time.Second)
	v.Close(t)

	v2 := startView(t, cfg, topic, 90*time.Second)
	pr := v2.Progress()
	t.Logf("view: restart restored %d offsets (%d keys) in %s", pr.Read, pr.Keys, pr.Elapsed.Round(time.Millisecond))
	assert.Equal(t, int64(len(want)), v2.Len())
	checkView(t, v2, want, keys)
	v2.Close(t)
}

// createCompactedTopic creates a table's topic: compacted, in small segments with a low
// dirty ratio, so the cleaner may compact while the test runs and the View reads past
// compacted-away offsets. It waits until every partition has a leader.
func createCompactedTopic(t *testing.T, brokers, topic string, partitions int) {
	t.Helper()
	harness.CreateTopicConfig(t, brokers, topic, partitions, 1,
		map[string]string{"cleanup.policy": "compact", "segment.bytes": "4194304", "min.cleanable.dirty.ratio": "0.01"})
}

func viewKey(i int) string { return fmt.Sprintf("key-%07d", i) }

// produceTable writes records records over keys keys (record i to key i mod keys, value
// "v<i>"), then a tombstone for each of the first deletes keys, and returns each key's
// last value (deleted keys absent), worked out rather than tracked record by record:
// the race detector makes a million map writes slow.
func produceTable(t *testing.T, brokers, topic string, keys, records, deletes int) map[string]string {
	t.Helper()
	start := time.Now()
	p, err := harness.NewProducer(brokers)
	require.NoError(t, err)
	defer p.Close()
	dr := make(chan kafka.Event, 100_000)
	var acked, failed int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range dr {
			if m, ok := ev.(*kafka.Message); ok {
				if m.TopicPartition.Error != nil {
					failed++
				}
				acked++
			}
		}
	}()
	send := func(k, v []byte) {
		require.NoError(t, harness.Produce(p, &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny}, Key: k, Value: v}, dr))
	}
	for i := range records {
		send([]byte(viewKey(i%keys)), strconv.AppendInt([]byte{'v'}, int64(i), 10))
	}
	for i := range deletes {
		send([]byte(viewKey(i)), nil)
	}
	require.Zero(t, p.Flush(60_000), "records not delivered within 60s")
	close(dr)
	<-done
	require.Zero(t, failed)
	require.Equal(t, records+deletes, acked)
	t.Logf("produced %d records (%d keys, %d tombstones) in %s", records+deletes, keys, deletes, time.Since(start).Round(time.Millisecond))
	want := make(map[string]string, keys)
	for i := max(records-keys, 0); i < records; i++ {
		want[viewKey(i%keys)] = "v" + strconv.Itoa(i)
	}
	for i := range deletes {
		delete(want, viewKey(i))
	}
	return want
}

// runningView is a View whose Run runs in a goroutine.
type runningView struct {
	*view.View[string, string]
	stop func() error
}

// Close stops the View and checks that Run returned nil within 20s.
func (v *runningView) Close(t *testing.T) {
	t.Helper()
	require.NoError(t, v.stop())
}

// startView runs a View of topic and waits at most timeout for it to be ready.
func startView(t *testing.T, cfg view.Config, topic string, timeout time.Duration) *runningView {
	t.Helper()
	v, err := view.New(cfg, topic, codec.String(), codec.String(), view.WithLogger(slog.New(slog.NewTextHandler(viewLogWriter{t}, nil))))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- v.Run(ctx) }()
	rv := &runningView{View: v, stop: sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(20 * time.Second):
			return errors.New("View.Run did not return within 20s of its context ending")
		}
	})}
	t.Cleanup(func() { _ = rv.stop() })
	wctx, wcancel := context.WithTimeout(ctx, timeout)
	defer wcancel()
	require.NoError(t, v.WaitReady(wctx), "View not ready within %s: %+v", timeout, v.Progress())
	return rv
}

// checkView checks every key against want, from 4 goroutines.
func checkView(t *testing.T, v *runningView, want map[string]string, keys int) {
	t.Helper()
	start := time.Now()
	var mu sync.Mutex
	var wrong []string
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < keys; i += 4 {
				k := viewKey(i)
				got, found, err := v.Get(k)
				w, ok := want[k]
				if err != nil || found != ok || got != w {
					mu.Lock()
					wrong = append(wrong, fmt.Sprintf("%s: got %q found=%v err=%v, want %q found=%v", k, got, found, err, w, ok))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(wrong) > 10 {
		wrong = append(wrong[:10], fmt.Sprintf("... and %d more", len(wrong)-10))
	}
	require.Empty(t, wrong, "keys whose value differs from the last one produced")
	t.Logf("checked %d keys in %s", keys, time.Since(start).Round(time.Millisecond))
}

// followUpdates writes n updates (every other one a tombstone of a key that existed,
// the others new values) and checks that each is visible through Get within bound of
// the last acknowledgement; it logs when the last one showed.
func followUpdates(t *testing.T, brokers, topic string, v *runningView, want map[string]string, n int, bound time.Duration) {
	t.Helper()
	p, err := harness.NewProducer(brokers)
	require.NoError(t, err)
	defer p.Close()
	dr := make(chan kafka.Event, n)
	type upd struct {
		key   string
		value *string
	}
	var upds []upd
	for i := range n {
		k := viewKey(10_000 + i*7)
		var val []byte
		if i%2 == 1 {
			s := fmt.Sprintf("updated-%d", i)
			val = []byte(s)
			want[k] = s
			upds = append(upds, upd{k, &s})
		} else {
			delete(want, k)
			upds = append(upds, upd{k, nil})
		}
		require.NoError(t, p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny}, Key: []byte(k), Value: val}, dr))
	}
	require.Zero(t, p.Flush(30_000), "updates not delivered within 30s")
	for range n {
		require.NoError(t, (<-dr).(*kafka.Message).TopicPartition.Error)
	}
	ackedAt := time.Now()
	var slowest time.Duration
	pending := upds
	deadline := ackedAt.Add(bound)
	for len(pending) > 0 && time.Now().Before(deadline) {
		var next []upd
		for _, u := range pending {
			got, found, err := v.Get(u.key)
			require.NoError(t, err)
			if (u.value == nil && !found) || (u.value != nil && found && got == *u.value) {
				continue
			}
			next = append(next, u)
		}
		pending = next
		slowest = time.Since(ackedAt)
		if len(pending) > 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	require.Empty(t, pending, "%d of %d updates not visible within %s of their acknowledgement (lag %v)", len(pending), n, bound, v.Lag())
	var lags []string
	for p, l := range v.Lag() {
		lags = append(lags, fmt.Sprintf("%d:%d", p, l))
	}
	t.Logf("follow: %d updates all visible %s after the last acknowledgement (lag per partition now %s)", n, slowest.Round(time.Millisecond), strings.Join(lags, " "))
}

// viewLogWriter sends log lines to the test's log.
type viewLogWriter struct{ t *testing.T }

func (w viewLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
