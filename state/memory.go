package state

import (
	"context"
	"sync"
)

// Memory is a Store in a Go map, for tests and examples. It keeps the values themselves,
// not encoded copies: Get returns what Put was given, so a value holding a slice, map or
// pointer is shared between the caller and the store (mutating it after Put changes the
// stored value, which a Redis store would not show). Use plain values, or treat them as
// immutable.
//
// It needs no codec because nothing is encoded; the flip side is that it cannot catch a
// codec that does not round-trip. Run the code once against Redis (the integration tests
// do) to check that.
type Memory[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]V
}

var _ Store[string, string] = (*Memory[string, string])(nil)

// NewMemory returns an empty in-memory Store.
func NewMemory[K comparable, V any]() *Memory[K, V] {
	return &Memory[K, V]{m: map[K]V{}}
}

func memFail(op string, p int32, keys int, err error) error {
	return &Error{Store: "memory", Op: op, Partition: p, Keys: keys, Err: err}
}

// Get implements Store.
func (s *Memory[K, V]) Get(ctx context.Context, key K) (V, bool, error) {
	if err := ctx.Err(); err != nil {
		var zero V
		return zero, false, memFail("Get", -1, 1, err)
	}
	s.mu.RLock()
	v, ok := s.m[key]
	s.mu.RUnlock()
	return v, ok, nil
}

// GetMany implements Store. It reads under one lock, so it sees a consistent snapshot.
func (s *Memory[K, V]) GetMany(ctx context.Context, keys []K) ([]V, []bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, memFail("GetMany", -1, len(keys), err)
	}
	values, found := make([]V, len(keys)), make([]bool, len(keys))
	s.mu.RLock()
	for i, k := range keys {
		values[i], found[i] = s.m[k]
	}
	s.mu.RUnlock()
	return values, found, nil
}

// Put implements Store.
func (s *Memory[K, V]) Put(ctx context.Context, key K, value V) error {
	if err := ctx.Err(); err != nil {
		return memFail("Put", -1, 1, err)
	}
	s.mu.Lock()
	s.m[key] = value
	s.mu.Unlock()
	return nil
}

// PutMany implements Store.
func (s *Memory[K, V]) PutMany(ctx context.Context, entries []Entry[K, V]) error {
	if err := ctx.Err(); err != nil {
		return memFail("PutMany", -1, len(entries), err)
	}
	s.mu.Lock()
	for _, e := range entries {
		s.m[e.Key] = e.Value
	}
	s.mu.Unlock()
	return nil
}

// Delete implements Store.
func (s *Memory[K, V]) Delete(ctx context.Context, keys ...K) error {
	if err := ctx.Err(); err != nil {
		return memFail("Delete", -1, len(keys), err)
	}
	s.mu.Lock()
	for _, k := range keys {
		delete(s.m, k)
	}
	s.mu.Unlock()
	return nil
}

// Len returns the number of keys, for tests.
func (s *Memory[K, V]) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}
