// Package statetest is the conformance suite every state.Store and state.Table passes:
// the in-memory ones in state's own tests, the Redis ones against a real redis-server and
// a real Redis Cluster in integration/.
//
// The factories return a fresh, empty store or table each call (in its own namespace,
// for Redis); calling one twice gives two stores that must not see each other's keys.
package statetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/state"
)

// Keys that would collide if a store escaped its namespace or partition.
var awkwardKeys = []string{
	"", "a", "a:b", ":", "::", "k:x", "{", "}", "{}", "{a}", "{0}", "}{", "{ns:1}:k:x",
	"\x00", "\x00\x01", "\xff\xfe", "héllo 世界", "with space", "new\nline", strings.Repeat("x", 1024),
}

// secret marks payload bytes that must never appear in an error message.
const secret = "SECRET-PAYLOAD-7431"

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func entries(prefix string, n int, value func(i int) string) []state.Entry[string, string] {
	es := make([]state.Entry[string, string], n)
	for i := range es {
		es[i] = state.Entry[string, string]{Key: fmt.Sprintf("%s%04d", prefix, i), Value: value(i)}
	}
	return es
}

func keysOf(es []state.Entry[string, string]) []string {
	ks := make([]string, len(es))
	for i, e := range es {
		ks[i] = e.Key
	}
	return ks
}

// TestStore runs the Store conformance tests. newStore returns a fresh, empty store each
// call.
func TestStore(t *testing.T, newStore func(t *testing.T) state.Store[string, string]) {
	t.Run("MissingKey", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		v, found, err := s.Get(ctx, "missing")
		require.NoError(t, err, "an absent key is not an error")
		assert.False(t, found)
		assert.Equal(t, "", v)
	})

	t.Run("PutGetOverwrite", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		require.NoError(t, s.Put(ctx, "k", "v1"))
		v, found, err := s.Get(ctx, "k")
		require.NoError(t, err)
		assert.True(t, found)
		assert.Equal(t, "v1", v)
		require.NoError(t, s.Put(ctx, "k", "v2"))
		v, _, err = s.Get(ctx, "k")
		require.NoError(t, err)
		assert.Equal(t, "v2", v)
	})

	t.Run("EmptyValueIsFound", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		require.NoError(t, s.Put(ctx, "empty", ""))
		v, found, err := s.Get(ctx, "empty")
		require.NoError(t, err)
		assert.True(t, found, "an empty value is a value, not an absent key")
		assert.Equal(t, "", v)
	})

	t.Run("GetManyAlignment", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		require.NoError(t, s.PutMany(ctx, []state.Entry[string, string]{{Key: "a", Value: "A"}, {Key: "c", Value: "C"}}))
		tests := []struct {
			name   string
			keys   []string
			values []string
			found  []bool
		}{
			{"one present", []string{"a"}, []string{"A"}, []bool{true}},
			{"one missing", []string{"b"}, []string{""}, []bool{false}},
			{"mixed", []string{"a", "b", "c"}, []string{"A", "", "C"}, []bool{true, false, true}},
			{"duplicates", []string{"c", "a", "c", "b", "b", "a"}, []string{"C", "A", "C", "", "", "A"}, []bool{true, true, true, false, false, true}},
			{"all missing", []string{"x", "y"}, []string{"", ""}, []bool{false, false}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				values, found, err := s.GetMany(ctx, tt.keys)
				require.NoError(t, err)
				assert.Equal(t, tt.values, values)
				assert.Equal(t, tt.found, found)
			})
		}
	})

	t.Run("PutManyGetMany", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		es := entries("k", 500, func(i int) string { return fmt.Sprintf("v%d", i*i) })
		require.NoError(t, s.PutMany(ctx, es))
		values, found, err := s.GetMany(ctx, keysOf(es))
		require.NoError(t, err)
		require.Len(t, values, len(es))
		for i, e := range es {
			assert.True(t, found[i], e.Key)
			assert.Equal(t, e.Value, values[i], e.Key)
		}
	})

	t.Run("PutManyDuplicateKeysLastWins", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		require.NoError(t, s.PutMany(ctx, []state.Entry[string, string]{{Key: "k", Value: "1"}, {Key: "j", Value: "x"}, {Key: "k", Value: "2"}}))
		v, _, err := s.Get(ctx, "k")
		require.NoError(t, err)
		assert.Equal(t, "2", v)
	})

	t.Run("Delete", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		require.NoError(t, s.PutMany(ctx, []state.Entry[string, string]{{Key: "a", Value: "A"}, {Key: "b", Value: "B"}, {Key: "c", Value: "C"}}))
		require.NoError(t, s.Delete(ctx, "missing"), "deleting an absent key is fine")
		require.NoError(t, s.Delete(ctx, "a", "missing", "c", "a"))
		values, found, err := s.GetMany(ctx, []string{"a", "b", "c"})
		require.NoError(t, err)
		assert.Equal(t, []bool{false, true, false}, found)
		assert.Equal(t, []string{"", "B", ""}, values)
	})

	t.Run("EmptyCalls", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		for _, keys := range [][]string{nil, {}} {
			values, found, err := s.GetMany(ctx, keys)
			require.NoError(t, err)
			assert.Empty(t, values)
			assert.Empty(t, found)
		}
		require.NoError(t, s.PutMany(ctx, nil))
		require.NoError(t, s.PutMany(ctx, []state.Entry[string, string]{}))
		require.NoError(t, s.Delete(ctx))
		require.NoError(t, s.Delete(ctx, []string{}...))
	})

	t.Run("LargeValue", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
		require.NoError(t, s.Put(ctx, "big", big))
		v, found, err := s.Get(ctx, "big")
		require.NoError(t, err)
		require.True(t, found)
		assert.True(t, v == big, "1 MiB value changed on its way through the store")
	})

	t.Run("AwkwardKeysStayInTheirNamespace", func(t *testing.T) {
		a, b, ctx := newStore(t), newStore(t), ctxT(t)
		var ea, eb []state.Entry[string, string]
		for i, k := range awkwardKeys {
			ea = append(ea, state.Entry[string, string]{Key: k, Value: fmt.Sprintf("a%d", i)})
			eb = append(eb, state.Entry[string, string]{Key: k, Value: fmt.Sprintf("b%d", i)})
		}
		require.NoError(t, a.PutMany(ctx, ea))
		require.NoError(t, b.PutMany(ctx, eb))
		for _, tc := range []struct {
			s  state.Store[string, string]
			es []state.Entry[string, string]
		}{{a, ea}, {b, eb}} {
			values, found, err := tc.s.GetMany(ctx, awkwardKeys)
			require.NoError(t, err)
			for i, e := range tc.es {
				assert.True(t, found[i], "key %q", e.Key)
				assert.Equal(t, e.Value, values[i], "key %q", e.Key)
			}
		}
		require.NoError(t, a.Delete(ctx, awkwardKeys...))
		_, found, err := a.GetMany(ctx, awkwardKeys)
		require.NoError(t, err)
		assert.NotContains(t, found, true)
		_, found, err = b.GetMany(ctx, awkwardKeys)
		require.NoError(t, err)
		assert.NotContains(t, found, false, "deleting in one store removed keys of another")
	})

	t.Run("Concurrent", func(t *testing.T) {
		s, ctx := newStore(t), ctxT(t)
		const workers, rounds = 8, 40
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- func() error {
					own := fmt.Sprintf("w%d-", w)
					for r := range rounds {
						es := entries(own, 10, func(i int) string { return fmt.Sprintf("%d", r) })
						if err := s.PutMany(ctx, es); err != nil {
							return err
						}
						if err := s.Put(ctx, "shared", own); err != nil {
							return err
						}
						values, found, err := s.GetMany(ctx, append(keysOf(es), "shared"))
						if err != nil {
							return err
						}
						for i := range es {
							if !found[i] || values[i] != fmt.Sprintf("%d", r) {
								return fmt.Errorf("worker %d round %d: key %s = %q, %v", w, r, es[i].Key, values[i], found[i])
							}
						}
						if !found[len(es)] {
							return errors.New("shared key missing")
						}
						if err := s.Delete(ctx, es[0].Key); err != nil {
							return err
						}
						if _, found, err := s.Get(ctx, es[0].Key); err != nil || found {
							return fmt.Errorf("worker %d: deleted key found=%v err=%v", w, found, err)
						}
					}
					return nil
				}()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			assert.NoError(t, err)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		s := newStore(t)
		ctx := cancelled()
		_, _, err := s.Get(ctx, secret)
		assertCancelled(t, err)
		_, _, err = s.GetMany(ctx, []string{secret})
		assertCancelled(t, err)
		assertCancelled(t, s.Put(ctx, secret, secret))
		assertCancelled(t, s.PutMany(ctx, []state.Entry[string, string]{{Key: secret, Value: secret}}))
		assertCancelled(t, s.Delete(ctx, secret))
	})
}

func assertCancelled(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled)
	var se *state.Error
	assert.ErrorAs(t, err, &se, "errors are *state.Error")
	assert.NotContains(t, err.Error(), secret, "error messages must not carry keys or values")
}

// TestStoreTTL checks that values written by a store made with a TTL expire. newStore
// returns a fresh store whose writes expire after ttl.
func TestStoreTTL(t *testing.T, newStore func(t *testing.T, ttl time.Duration) state.Store[string, string]) {
	const ttl = 300 * time.Millisecond
	s, ctx := newStore(t, ttl), ctxT(t)
	require.NoError(t, s.Put(ctx, "one", "1"))
	require.NoError(t, s.PutMany(ctx, entries("many", 5, func(int) string { return "x" })))
	_, found, err := s.GetMany(ctx, []string{"one", "many0000", "many0004"})
	require.NoError(t, err)
	assert.Equal(t, []bool{true, true, true}, found, "values must be there before the TTL passes")
	assert.Eventually(t, func() bool {
		_, found, err := s.GetMany(ctx, []string{"one", "many0000", "many0004"})
		return err == nil && !found[0] && !found[1] && !found[2]
	}, 10*time.Second, 50*time.Millisecond, "values did not expire after %s", ttl)
}

// TestTable runs the Table conformance tests. newTable returns a fresh, empty table each
// call.
func TestTable(t *testing.T, newTable func(t *testing.T) *state.Table[string, string]) {
	t.Run("PartitionStore", func(t *testing.T) {
		TestStore(t, func(t *testing.T) state.Store[string, string] { return newTable(t).Partition(3) })
	})

	t.Run("PartitionsAndTablesIsolated", func(t *testing.T) {
		a, b, ctx := newTable(t), newTable(t), ctxT(t)
		parts := []int32{0, 1, 10, 11, 100}
		for ti, tbl := range []*state.Table[string, string]{a, b} {
			for _, p := range parts {
				var es []state.Entry[string, string]
				for _, k := range awkwardKeys {
					es = append(es, state.Entry[string, string]{Key: k, Value: fmt.Sprintf("%d/%d/%q", ti, p, k)})
				}
				require.NoError(t, tbl.Apply(ctx, p, es, nil, map[string]int64{"in": int64(p) + 1}))
			}
		}
		for ti, tbl := range []*state.Table[string, string]{a, b} {
			for _, p := range parts {
				values, found, err := tbl.Partition(p).GetMany(ctx, awkwardKeys)
				require.NoError(t, err)
				for i, k := range awkwardKeys {
					assert.True(t, found[i])
					assert.Equal(t, fmt.Sprintf("%d/%d/%q", ti, p, k), values[i], "table %d partition %d key %q", ti, p, k)
				}
				next, err := tbl.Applied(ctx, "in", p)
				require.NoError(t, err)
				assert.Equal(t, int64(p)+1, next)
			}
		}
		_, found, err := a.Partition(2).GetMany(ctx, awkwardKeys)
		require.NoError(t, err)
		assert.NotContains(t, found, true, "partition 2 was never written")
	})

	t.Run("AppliedStartsAtZero", func(t *testing.T) {
		tbl, ctx := newTable(t), ctxT(t)
		next, err := tbl.Applied(ctx, "in", 0)
		require.NoError(t, err)
		assert.Equal(t, int64(0), next)
	})

	t.Run("ApplyWritesDeletesAndRecords", func(t *testing.T) {
		tbl, ctx := newTable(t), ctxT(t)
		p := tbl.Partition(4)
		require.NoError(t, p.PutMany(ctx, []state.Entry[string, string]{{Key: "old", Value: "o"}, {Key: "both", Value: "b0"}}))
		err := tbl.Apply(ctx, 4, []state.Entry[string, string]{{Key: "x", Value: "1"}, {Key: "y", Value: "2"}, {Key: "both", Value: "b1"}},
			[]string{"old", "both", "never-there"}, map[string]int64{"in": 10})
		require.NoError(t, err)
		values, found, err := p.GetMany(ctx, []string{"x", "y", "old", "both"})
		require.NoError(t, err)
		assert.Equal(t, []string{"1", "2", "", ""}, values)
		assert.Equal(t, []bool{true, true, false, false}, found, "deletes are applied after puts")
		next, err := tbl.Applied(ctx, "in", 4)
		require.NoError(t, err)
		assert.Equal(t, int64(10), next)
		next, err = tbl.Applied(ctx, "other", 4)
		require.NoError(t, err)
		assert.Equal(t, int64(0), next)
		next, err = tbl.Applied(ctx, "in", 5)
		require.NoError(t, err)
		assert.Equal(t, int64(0), next, "offsets are per partition")
	})

	t.Run("ApplyIdempotent", func(t *testing.T) {
		tbl, ctx := newTable(t), ctxT(t)
		require.NoError(t, tbl.Apply(ctx, 0, []state.Entry[string, string]{{Key: "k", Value: "first"}}, nil, map[string]int64{"in": 10}))
		tests := []struct {
			name    string
			offsets map[string]int64
		}{
			{"same offsets", map[string]int64{"in": 10}},
			{"lower offsets", map[string]int64{"in": 3}},
			{"zero", map[string]int64{"in": 0}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tbl.Apply(ctx, 0, []state.Entry[string, string]{{Key: "k", Value: "second"}, {Key: "new", Value: "n"}}, []string{"k"}, tt.offsets)
				assert.ErrorIs(t, err, state.ErrAlreadyApplied)
				values, found, err := tbl.Partition(0).GetMany(ctx, []string{"k", "new"})
				require.NoError(t, err)
				assert.Equal(t, []string{"first", ""}, values, "nothing is written")
				assert.Equal(t, []bool{true, false}, found)
				next, err := tbl.Applied(ctx, "in", 0)
				require.NoError(t, err)
				assert.Equal(t, int64(10), next, "applied offsets never go back")
			})
		}
	})

	t.Run("AppliedMonotonicAcrossTopics", func(t *testing.T) {
		tbl, ctx := newTable(t), ctxT(t)
		require.NoError(t, tbl.Apply(ctx, 1, nil, nil, map[string]int64{"a": 10, "b": 5}))
		require.NoError(t, tbl.Apply(ctx, 1, []state.Entry[string, string]{{Key: "k", Value: "v"}}, nil, map[string]int64{"a": 8, "b": 7}),
			"one newer topic is enough to apply")
		for topic, want := range map[string]int64{"a": 10, "b": 7} {
			next, err := tbl.Applied(ctx, topic, 1)
			require.NoError(t, err)
			assert.Equal(t, want, next, topic)
		}
		assert.ErrorIs(t, tbl.Apply(ctx, 1, nil, nil, map[string]int64{"a": 9}), state.ErrAlreadyApplied)
		assert.ErrorIs(t, tbl.Apply(ctx, 1, nil, nil, map[string]int64{"a": 10, "b": 7}), state.ErrAlreadyApplied)
		// Decimal offsets of different lengths, up to the largest int64.
		for _, off := range []int64{99, 100, 1 << 53, 1<<53 + 1, math.MaxInt64 - 1, math.MaxInt64} {
			require.NoError(t, tbl.Apply(ctx, 2, nil, nil, map[string]int64{"a": off}), "offset %d", off)
			assert.ErrorIs(t, tbl.Apply(ctx, 2, nil, nil, map[string]int64{"a": off}), state.ErrAlreadyApplied, "offset %d", off)
			assert.ErrorIs(t, tbl.Apply(ctx, 2, nil, nil, map[string]int64{"a": off - 1}), state.ErrAlreadyApplied, "offset %d", off)
			next, err := tbl.Applied(ctx, "a", 2)
			require.NoError(t, err)
			assert.Equal(t, off, next)
		}
	})

	t.Run("ApplyInvalid", func(t *testing.T) {
		tbl, ctx := newTable(t), ctxT(t)
		es := []state.Entry[string, string]{{Key: secret, Value: secret}}
		tests := []struct {
			name      string
			partition int32
			offsets   map[string]int64
		}{
			{"no offsets", 0, nil},
			{"empty offsets", 0, map[string]int64{}},
			{"negative offset", 0, map[string]int64{"in": -1}},
			{"negative partition", -1, map[string]int64{"in": 1}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tbl.Apply(ctx, tt.partition, es, nil, tt.offsets)
				require.Error(t, err)
				assert.NotErrorIs(t, err, state.ErrAlreadyApplied)
				assert.NotContains(t, err.Error(), secret)
			})
		}
		_, found, err := tbl.Partition(0).Get(ctx, secret)
		require.NoError(t, err)
		assert.False(t, found, "a rejected Apply writes nothing")
		_, _, err = tbl.Partition(-1).Get(ctx, "k")
		assert.Error(t, err, "negative partition")
		_, err = tbl.Applied(ctx, "in", -1)
		assert.Error(t, err, "negative partition")
	})

	t.Run("ApplyAtomicForReaders", func(t *testing.T) {
		tbl, ctx := newTable(t), ctxT(t)
		keys := make([]string, 20)
		for i := range keys {
			keys[i] = fmt.Sprintf("k%02d", i)
		}
		const batches = 60
		done, reading := make(chan struct{}), make(chan struct{})
		readErr := make(chan error, 1)
		go func() {
			readErr <- func() error {
				for reads := 0; ; reads++ {
					if reads == 1 {
						close(reading)
					}
					select {
					case <-done:
						return nil
					default:
					}
					values, found, err := tbl.Partition(7).GetMany(ctx, keys)
					if err != nil {
						return err
					}
					for i := range keys {
						if found[i] != found[0] || values[i] != values[0] {
							return fmt.Errorf("read %d saw half a batch: %q=%q but %q=%q", reads, keys[0], values[0], keys[i], values[i])
						}
					}
				}
			}()
		}()
		select {
		case <-reading:
		case err := <-readErr:
			require.NoError(t, err)
			t.Fatal("the reader stopped before the writes began")
		case <-ctx.Done():
			t.Fatal("the reader never read")
		}
		for b := 1; b <= batches; b++ {
			if b%10 == 0 {
				runtime.Gosched() // let the reader in between batches, even on one CPU
			}
			es := make([]state.Entry[string, string], len(keys))
			for i, k := range keys {
				es[i] = state.Entry[string, string]{Key: k, Value: fmt.Sprintf("batch%d", b)}
			}
			require.NoError(t, tbl.Apply(ctx, 7, es, nil, map[string]int64{"in": int64(b * 100)}))
		}
		close(done)
		require.NoError(t, <-readErr)
	})

	t.Run("ConflictWithNewerOwner", func(t *testing.T) {
		old, ctx := newTable(t), ctxT(t)
		next, err := old.Applied(ctx, "in", 0)
		require.NoError(t, err)
		require.Equal(t, int64(0), next)
		require.NoError(t, old.Apply(ctx, 0, []state.Entry[string, string]{{Key: "total", Value: "5"}}, nil, map[string]int64{"in": 5}))

		// The partition moves: the new owner reads where it stands and applies further.
		newer := old.Fork()
		next, err = newer.Applied(ctx, "in", 0)
		require.NoError(t, err)
		require.Equal(t, int64(5), next)
		require.NoError(t, newer.Apply(ctx, 0, []state.Entry[string, string]{{Key: "total", Value: "8"}}, nil, map[string]int64{"in": 8}))

		// The old owner wakes up with a batch computed from total=5 covering 5..11.
		err = old.Apply(ctx, 0, []state.Entry[string, string]{{Key: "total", Value: "11"}}, nil, map[string]int64{"in": 11})
		require.ErrorIs(t, err, state.ErrFenced)
		var ce *state.ConflictError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, int32(0), ce.Partition)
		assert.Equal(t, "in", ce.Topic)
		assert.Equal(t, int64(5), ce.Expected)
		assert.Equal(t, int64(8), ce.Stored)
		assert.Equal(t, old.Namespace(), ce.Namespace)
		v, _, err := old.Partition(0).Get(ctx, "total")
		require.NoError(t, err)
		assert.Equal(t, "8", v, "the stale owner's write was rejected")

		// A batch the new owner has covered already is just "already applied".
		assert.ErrorIs(t, old.Apply(ctx, 0, []state.Entry[string, string]{{Key: "total", Value: "7"}}, nil, map[string]int64{"in": 7}), state.ErrAlreadyApplied)
		// Still fenced until it reads the partition's offsets again (a new assignment).
		assert.ErrorIs(t, old.Apply(ctx, 0, nil, nil, map[string]int64{"in": 12}), state.ErrFenced)
		next, err = old.Applied(ctx, "in", 0)
		require.NoError(t, err)
		assert.Equal(t, int64(8), next)
		require.NoError(t, old.Apply(ctx, 0, []state.Entry[string, string]{{Key: "total", Value: "12"}}, nil, map[string]int64{"in": 12}))
		// Now the other one is the stale owner.
		assert.ErrorIs(t, newer.Apply(ctx, 0, nil, nil, map[string]int64{"in": 13}), state.ErrFenced)
	})

	t.Run("RetryAfterLostReply", func(t *testing.T) {
		// The first attempt of a batch is applied but its reply is lost (the connection broke
		// after Redis ran the script); the caller, or go-redis itself, sends it again.
		tbl, ctx := newTable(t), ctxT(t)
		_, err := tbl.Applied(ctx, "in", 2)
		require.NoError(t, err)
		batch := []state.Entry[string, string]{{Key: "count", Value: "1"}}
		lostReply := tbl.Fork() // applies without tbl learning about it
		require.NoError(t, lostReply.Apply(ctx, 2, batch, nil, map[string]int64{"in": 10}))

		assert.ErrorIs(t, tbl.Apply(ctx, 2, batch, nil, map[string]int64{"in": 10}), state.ErrAlreadyApplied)
		require.NoError(t, tbl.Apply(ctx, 2, []state.Entry[string, string]{{Key: "count", Value: "2"}}, nil, map[string]int64{"in": 20}),
			"after an already-applied retry of its own batch the writer goes on without a conflict")
		v, _, err := tbl.Partition(2).Get(ctx, "count")
		require.NoError(t, err)
		assert.Equal(t, "2", v)
	})

	t.Run("Fenced", func(t *testing.T) {
		tbl, ctx := newTable(t), ctxT(t)
		get := func(p int32, k string) string {
			v, _, err := tbl.Partition(p).Get(ctx, k)
			require.NoError(t, err)
			return v
		}
		put := func(v string) state.Entry[string, string] { return state.Entry[string, string]{Key: "k", Value: v} }

		require.NoError(t, tbl.PutFenced(ctx, 1, "slice-1", 5, put("t5")))
		err := tbl.PutFenced(ctx, 1, "slice-1", 4, put("t4"))
		require.ErrorIs(t, err, state.ErrFenced)
		var fe *state.FencedError
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, state.FencedError{Fence: "slice-1", Partition: 1, Token: 4, Highest: 5}, *fe)
		assert.Equal(t, "t5", get(1, "k"), "a stale token writes nothing")

		require.NoError(t, tbl.PutFenced(ctx, 1, "slice-1", 5, put("t5 again")), "the current token passes")
		assert.Equal(t, "t5 again", get(1, "k"))
		require.NoError(t, tbl.PutFenced(ctx, 1, "slice-1", 7, put("t7")), "a higher token takes over")
		err = tbl.PutFenced(ctx, 1, "slice-1", 5, put("t5 stale"))
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, int64(7), fe.Highest)
		assert.Equal(t, "t7", get(1, "k"))

		require.NoError(t, tbl.PutFenced(ctx, 1, "slice-2", 1, state.Entry[string, string]{Key: "other", Value: "o"}), "fences are independent")
		require.NoError(t, tbl.PutFenced(ctx, 2, "slice-1", 1, put("p2")), "a fence lives in its partition")
		assert.Equal(t, "p2", get(2, "k"))
		assert.Equal(t, "t7", get(1, "k"))

		// Claiming without writing, token 0, and decimal lengths.
		require.NoError(t, tbl.PutFenced(ctx, 3, "claim", 0))
		require.NoError(t, tbl.PutFenced(ctx, 3, "claim", 9))
		require.NoError(t, tbl.PutFenced(ctx, 3, "claim", 10))
		assert.ErrorIs(t, tbl.PutFenced(ctx, 3, "claim", 9), state.ErrFenced)
		require.NoError(t, tbl.PutFenced(ctx, 3, "claim", math.MaxInt64))
		assert.ErrorIs(t, tbl.PutFenced(ctx, 3, "claim", math.MaxInt64-1), state.ErrFenced)

		// Fences and applied offsets do not touch each other.
		next, err := tbl.Applied(ctx, "slice-1", 1)
		require.NoError(t, err)
		assert.Equal(t, int64(0), next)

		for name, call := range map[string]func() error{
			"empty fence":        func() error { return tbl.PutFenced(ctx, 1, "", 1) },
			"negative token":     func() error { return tbl.PutFenced(ctx, 1, "f", -1) },
			"negative partition": func() error { return tbl.PutFenced(ctx, -1, "f", 1) },
		} {
			err := call()
			assert.Error(t, err, name)
			assert.NotErrorIs(t, err, state.ErrFenced, name)
		}
	})

	t.Run("ConcurrentPartitions", func(t *testing.T) {
		tbl, ctx := newTable(t), ctxT(t)
		const parts, batches = 6, 25
		var wg sync.WaitGroup
		errs := make(chan error, parts)
		for p := range int32(parts) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- func() error {
					if _, err := tbl.Applied(ctx, "in", p); err != nil {
						return err
					}
					for b := 1; b <= batches; b++ {
						values, _, err := tbl.Partition(p).GetMany(ctx, []string{"n"})
						if err != nil {
							return err
						}
						n := 0
						fmt.Sscan(values[0], &n)
						if err := tbl.Apply(ctx, p, []state.Entry[string, string]{{Key: "n", Value: fmt.Sprint(n + 1)}}, nil, map[string]int64{"in": int64(b)}); err != nil {
							return err
						}
						// A replay of the same batch changes nothing.
						if err := tbl.Apply(ctx, p, []state.Entry[string, string]{{Key: "n", Value: "replayed"}}, nil, map[string]int64{"in": int64(b)}); !errors.Is(err, state.ErrAlreadyApplied) {
							return fmt.Errorf("replay of batch %d: %v", b, err)
						}
					}
					return nil
				}()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		for p := range int32(parts) {
			v, _, err := tbl.Partition(p).Get(ctx, "n")
			require.NoError(t, err)
			assert.Equal(t, fmt.Sprint(batches), v, "partition %d", p)
			next, err := tbl.Applied(ctx, "in", p)
			require.NoError(t, err)
			assert.Equal(t, int64(batches), next)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		tbl := newTable(t)
		ctx := cancelled()
		es := []state.Entry[string, string]{{Key: secret, Value: secret}}
		assertCancelled(t, tbl.Apply(ctx, 0, es, []string{secret}, map[string]int64{"in": 1}))
		_, err := tbl.Applied(ctx, "in", 0)
		assertCancelled(t, err)
		assertCancelled(t, tbl.PutFenced(ctx, 0, "f", 1, es...))
	})
}
