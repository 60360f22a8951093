package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/codec"
)

// RedisOption configures NewRedis and NewTable.
type RedisOption func(*redisOptions) error

type redisOptions struct {
	ttl time.Duration
}

// WithTTL makes every value written expire d after its write (SET … PX). Default: values
// never expire. d is rounded down to milliseconds and must be at least 1ms. A table's
// applied offsets and fencing tokens never expire.
func WithTTL(d time.Duration) RedisOption {
	return func(o *redisOptions) error {
		if d < time.Millisecond {
			return fmt.Errorf("state: WithTTL(%s): the TTL must be at least 1ms", d)
		}
		o.ttl = d.Truncate(time.Millisecond)
		return nil
	}
}

func buildOptions(opts []RedisOption) (redisOptions, error) {
	var o redisOptions
	var errs []error
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			errs = append(errs, err)
		}
	}
	return o, errors.Join(errs...)
}

// Redis is a Store in Redis: key k of namespace ns is the Redis string key
// "ns:" + key.Encode(k) (the encoded bytes as they are, binary included), holding
// value.Encode(v). Batch calls are one pipeline of GET, SET or DEL commands, which a
// Cluster client splits by node, so keys may live in any slot.
//
// The client is shared and never closed by the store. Its retry settings apply: go-redis
// retries a command whose connection broke (EOF) even if Redis had executed it, which is
// harmless for these idempotent commands.
type Redis[K comparable, V any] struct {
	c      redis.UniversalClient
	ns     string
	prefix string
	key    codec.Codec[K]
	val    codec.Codec[V]
	ttl    time.Duration
}

var _ Store[string, string] = (*Redis[string, string])(nil)

// NewRedis returns a Store over client (a *redis.Client, a Sentinel failover client or a
// *redis.ClusterClient) whose keys all start with namespace + ":". The namespace must be
// printable ASCII without spaces, ':', '{' or '}', so that no key of one namespace can
// be a key of another.
func NewRedis[K comparable, V any](client redis.UniversalClient, namespace string, key codec.Codec[K], value codec.Codec[V], opts ...RedisOption) (*Redis[K, V], error) {
	var errs []error
	if client == nil {
		errs = append(errs, errors.New("state: NewRedis: nil client"))
	}
	if err := validNamespace(namespace); err != nil {
		errs = append(errs, err)
	}
	if key == nil || value == nil {
		errs = append(errs, errors.New("state: NewRedis: key and value codecs are required"))
	}
	o, err := buildOptions(opts)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Redis[K, V]{c: client, ns: namespace, prefix: namespace + ":", key: key, val: value, ttl: o.ttl}, nil
}

// Namespace returns the namespace the store was created with.
func (s *Redis[K, V]) Namespace() string { return s.ns }

func (s *Redis[K, V]) fail(op string, keys int, err error) error {
	return &Error{Store: "redis", Op: op, Namespace: s.ns, Partition: -1, Keys: keys, Err: err}
}

func (s *Redis[K, V]) redisKey(k K) (string, error) {
	b, err := s.key.Encode(k)
	if err != nil {
		return "", fmt.Errorf("encode key: %w", err)
	}
	return joinKey(s.prefix, b), nil
}

// joinKey returns prefix + string(b) with one allocation.
func joinKey(prefix string, b []byte) string {
	var sb strings.Builder
	sb.Grow(len(prefix) + len(b))
	sb.WriteString(prefix)
	sb.Write(b)
	return sb.String()
}

// Get implements Store.
func (s *Redis[K, V]) Get(ctx context.Context, key K) (V, bool, error) {
	var zero V
	if err := ctx.Err(); err != nil {
		return zero, false, s.fail("Get", 1, err)
	}
	rk, err := s.redisKey(key)
	if err != nil {
		return zero, false, s.fail("Get", 1, err)
	}
	b, err := s.c.Get(ctx, rk).Bytes()
	if err == redis.Nil {
		return zero, false, nil
	}
	if err != nil {
		return zero, false, s.fail("Get", 1, err)
	}
	v, err := s.val.Decode(b)
	if err != nil {
		return zero, false, s.fail("Get", 1, fmt.Errorf("decode value: %w", err))
	}
	return v, true, nil
}

// GetMany implements Store with one pipeline of GETs.
func (s *Redis[K, V]) GetMany(ctx context.Context, keys []K) ([]V, []bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, s.fail("GetMany", len(keys), err)
	}
	if len(keys) == 0 {
		return []V{}, []bool{}, nil
	}
	pipe := s.c.Pipeline()
	cmds := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		rk, err := s.redisKey(k)
		if err != nil {
			return nil, nil, s.fail("GetMany", len(keys), err)
		}
		cmds[i] = pipe.Get(ctx, rk)
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, nil, s.fail("GetMany", len(keys), err)
	}
	values, found := make([]V, len(keys)), make([]bool, len(keys))
	for i, cmd := range cmds {
		b, err := cmd.Bytes()
		if err == redis.Nil {
			continue
		}
		if err != nil {
			return nil, nil, s.fail("GetMany", len(keys), err)
		}
		if values[i], err = s.val.Decode(b); err != nil {
			return nil, nil, s.fail("GetMany", len(keys), fmt.Errorf("decode value %d: %w", i, err))
		}
		found[i] = true
	}
	return values, found, nil
}

// Put implements Store.
func (s *Redis[K, V]) Put(ctx context.Context, key K, value V) error {
	if err := ctx.Err(); err != nil {
		return s.fail("Put", 1, err)
	}
	rk, err := s.redisKey(key)
	if err != nil {
		return s.fail("Put", 1, err)
	}
	b, err := s.val.Encode(value)
	if err != nil {
		return s.fail("Put", 1, fmt.Errorf("encode value: %w", err))
	}
	if err := s.c.Set(ctx, rk, b, s.ttl).Err(); err != nil {
		return s.fail("Put", 1, err)
	}
	return nil
}

// PutMany implements Store with one pipeline of SETs. Every entry is encoded before
// anything is sent, so an encoding error writes nothing.
func (s *Redis[K, V]) PutMany(ctx context.Context, entries []Entry[K, V]) error {
	if err := ctx.Err(); err != nil {
		return s.fail("PutMany", len(entries), err)
	}
	if len(entries) == 0 {
		return nil
	}
	pipe := s.c.Pipeline()
	for i := range entries {
		rk, err := s.redisKey(entries[i].Key)
		if err != nil {
			return s.fail("PutMany", len(entries), err)
		}
		b, err := s.val.Encode(entries[i].Value)
		if err != nil {
			return s.fail("PutMany", len(entries), fmt.Errorf("encode value %d: %w", i, err))
		}
		pipe.Set(ctx, rk, b, s.ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return s.fail("PutMany", len(entries), err)
	}
	return nil
}

// Delete implements Store with one pipeline of DELs (one DEL per key, so keys of
// different Cluster slots may be mixed).
func (s *Redis[K, V]) Delete(ctx context.Context, keys ...K) error {
	if err := ctx.Err(); err != nil {
		return s.fail("Delete", len(keys), err)
	}
	if len(keys) == 0 {
		return nil
	}
	pipe := s.c.Pipeline()
	for _, k := range keys {
		rk, err := s.redisKey(k)
		if err != nil {
			return s.fail("Delete", len(keys), err)
		}
		pipe.Del(ctx, rk)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return s.fail("Delete", len(keys), err)
	}
	return nil
}
