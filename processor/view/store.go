package view

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// op is one record to apply: a value to set, a tombstone (nil value) to delete, or a
// record skipped (it only moves the position).
type op struct {
	partition int32
	offset    int64
	key       []byte
	value     []byte
	skip      bool
}

// store holds a View's table as bytes. apply is called by Run's goroutine only; get, len
// and bytes by any goroutine.
type store interface {
	name() string
	get(ctx context.Context, key []byte) ([]byte, bool, error)
	apply(ctx context.Context, ops []op) error
	len() int64
	bytes() int64
	clear(ctx context.Context) error
	close()
}

// shards spreads the in-memory table over maps with their own locks, so that a write
// holds back few of the concurrent lookups, and buckets spreads the Redis table over
// hashes.
const (
	shards  = 64
	buckets = 64
)

// hash is 32-bit FNV-1a.
func hash(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

// memoryStore keeps the table in maps of encoded key to encoded value. An entry is one
// string holding key and value together (one allocation); the map's key and value are
// substrings of it.
type memoryStore struct {
	topic  string
	max    int64
	shards [shards]struct {
		mu sync.RWMutex
		m  map[string]string
	}
	keys atomic.Int64
	size atomic.Int64
}

func newMemoryStore(topic string, max int64) *memoryStore {
	s := &memoryStore{topic: topic, max: max}
	for i := range s.shards {
		s.shards[i].m = map[string]string{}
	}
	return s
}

func (s *memoryStore) name() string { return "memory" }

func (s *memoryStore) get(_ context.Context, key []byte) ([]byte, bool, error) {
	sh := &s.shards[hash(key)%shards]
	sh.mu.RLock()
	v, ok := sh.m[string(key)]
	sh.mu.RUnlock()
	if !ok {
		return nil, false, nil
	}
	return []byte(v), true, nil
}

func (s *memoryStore) apply(_ context.Context, ops []op) error {
	for i := range ops {
		o := &ops[i]
		if o.skip {
			continue
		}
		sh := &s.shards[hash(o.key)%shards]
		sh.mu.Lock()
		old, had := sh.m[string(o.key)]
		var delta int64
		if had {
			delta -= int64(len(o.key) + len(old) + EntryOverhead)
		}
		if o.value == nil {
			if had {
				delete(sh.m, string(o.key))
				s.keys.Add(-1)
				s.size.Add(delta)
			}
			sh.mu.Unlock()
			continue
		}
		delta += int64(len(o.key) + len(o.value) + EntryOverhead)
		if now := s.size.Load(); now+delta > s.max {
			sh.mu.Unlock()
			return fmt.Errorf("%w: topic %q: the in-memory store holds %d bytes (%d keys) and the record at partition %d offset %d would take it to %d, over Config.MaxBytes (%d): raise MaxBytes, or set Config.Redis to keep the table in Redis",
				ErrMemoryBound, s.topic, now, s.keys.Load(), o.partition, o.offset, now+delta, s.max)
		}
		kv := string(o.key) + string(o.value)
		sh.m[kv[:len(o.key)]] = kv[len(o.key):]
		if !had {
			s.keys.Add(1)
		}
		s.size.Add(delta)
		sh.mu.Unlock()
	}
	return nil
}

func (s *memoryStore) len() int64   { return s.keys.Load() }
func (s *memoryStore) bytes() int64 { return s.size.Load() }

func (s *memoryStore) clear(context.Context) error { return nil }

// close drops the table, so a stopped View's memory can be collected.
func (s *memoryStore) close() {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sh.m = map[string]string{}
		sh.mu.Unlock()
	}
	s.keys.Store(0)
	s.size.Store(0)
}

// redisStore keeps the table in Redis hashes: bucket b of the key's hash is the hash
// prefix+b, whose fields are the encoded keys. HSET and HDEL say whether a field was
// new or existed, which keeps the key count without reading anything back.
type redisStore struct {
	c      redis.UniversalClient
	prefix string
	keys   atomic.Int64
}

func newRedisStore(c redis.UniversalClient, prefix string) *redisStore {
	return &redisStore{c: c, prefix: prefix}
}

func (s *redisStore) name() string { return "redis" }

func (s *redisStore) bucket(key []byte) string {
	return s.prefix + strconv.Itoa(int(hash(key)%buckets))
}

func (s *redisStore) get(ctx context.Context, key []byte) ([]byte, bool, error) {
	b, err := s.c.HGet(ctx, s.bucket(key), string(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("view: redis: %w", err)
	}
	return b, true, nil
}

// apply writes ops in one pipeline. Writing a batch again after a failure is harmless:
// each write sets a key's last value, in order, and the counts come from the writes
// that succeeded in any attempt (a field is new, or deleted, only once).
func (s *redisStore) apply(ctx context.Context, ops []op) error {
	pipe := s.c.Pipeline()
	cmds := make([]*redis.IntCmd, 0, len(ops))
	dels := make([]bool, 0, len(ops))
	for i := range ops {
		o := &ops[i]
		if o.skip {
			continue
		}
		if o.value == nil {
			cmds = append(cmds, pipe.HDel(ctx, s.bucket(o.key), string(o.key)))
			dels = append(dels, true)
		} else {
			cmds = append(cmds, pipe.HSet(ctx, s.bucket(o.key), string(o.key), o.value))
			dels = append(dels, false)
		}
	}
	if len(cmds) == 0 {
		return nil
	}
	_, err := pipe.Exec(ctx)
	for i, c := range cmds {
		n, cerr := c.Result()
		if cerr != nil {
			continue
		}
		if dels[i] {
			s.keys.Add(-n)
		} else {
			s.keys.Add(n)
		}
	}
	if err != nil {
		return fmt.Errorf("redis: write %d updates: %w", len(cmds), err)
	}
	return nil
}

func (s *redisStore) len() int64   { return s.keys.Load() }
func (s *redisStore) bytes() int64 { return 0 }

// clear deletes the View's hashes. UNLINK frees them in the background, so a large
// table does not block Redis.
func (s *redisStore) clear(ctx context.Context) error {
	pipe := s.c.Pipeline()
	for b := range buckets {
		pipe.Unlink(ctx, s.prefix+strconv.Itoa(b))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	s.keys.Store(0)
	return nil
}

func (s *redisStore) close() {}

// permanent tells a Redis error that retrying cannot fix: the server refused the
// credentials or the command (ACL), or the key holds another type.
func permanent(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	for _, p := range []string{"NOAUTH", "WRONGPASS", "NOPERM", "WRONGTYPE"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
