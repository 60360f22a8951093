package state

import (
	"context"
	"fmt"
	"sync"
)

// memTable is the in-memory table backend: one lock makes every call atomic, as one Lua
// script is in Redis.
type memTable[K comparable, V any] struct {
	mu    sync.RWMutex
	parts map[int32]*memPart[K, V]
}

type memPart[K comparable, V any] struct {
	data    map[K]V
	applied map[string]int64
	fences  map[string]int64
}

func (m *memTable[K, V]) kind() string { return "memory" }

// checkEncode has nothing to check: the memory table keeps keys and values as they are.
func (m *memTable[K, V]) checkEncode([]Entry[K, V], []K) error { return nil }

func (m *memTable[K, V]) encodeKey(key K) ([]byte, error) {
	switch k := any(key).(type) {
	case string:
		return []byte(k), nil
	case []byte:
		return k, nil
	}
	return nil, fmt.Errorf("an in-memory table cannot encode a %T key: use PartitionOf with the key's bytes", key)
}

// part returns p's data, creating it; m.mu must be held for writing.
func (m *memTable[K, V]) part(p int32) *memPart[K, V] {
	mp := m.parts[p]
	if mp == nil {
		mp = &memPart[K, V]{data: map[K]V{}, applied: map[string]int64{}, fences: map[string]int64{}}
		m.parts[p] = mp
	}
	return mp
}

func (m *memTable[K, V]) get(_ context.Context, p int32, key K) (V, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var v V
	var ok bool
	if mp := m.parts[p]; mp != nil {
		v, ok = mp.data[key]
	}
	return v, ok, nil
}

func (m *memTable[K, V]) getMany(_ context.Context, p int32, keys []K) ([]V, []bool, error) {
	values, found := make([]V, len(keys)), make([]bool, len(keys))
	m.mu.RLock()
	defer m.mu.RUnlock()
	if mp := m.parts[p]; mp != nil {
		for i, k := range keys {
			values[i], found[i] = mp.data[k]
		}
	}
	return values, found, nil
}

func (m *memTable[K, V]) putMany(_ context.Context, p int32, entries []Entry[K, V]) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mp := m.part(p)
	for _, e := range entries {
		mp.data[e.Key] = e.Value
	}
	return nil
}

func (m *memTable[K, V]) del(_ context.Context, p int32, keys []K) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mp := m.parts[p]; mp != nil {
		for _, k := range keys {
			delete(mp.data, k)
		}
	}
	return nil
}

func (m *memTable[K, V]) applied(_ context.Context, p int32, topic string) (int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if mp := m.parts[p]; mp != nil {
		return mp.applied[topic], nil
	}
	return 0, nil
}

func (m *memTable[K, V]) apply(_ context.Context, p int32, puts []Entry[K, V], deletes []K, offsets, expect []topicOffset) (applyResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mp := m.part(p)
	res := applyResult{stored: make([]int64, len(offsets))}
	newer := false
	for i, o := range offsets {
		res.stored[i] = mp.applied[o.topic]
		newer = newer || o.offset > res.stored[i]
	}
	if !newer {
		res.status = statusAlready
		return res, nil
	}
	for _, e := range expect {
		if cur := mp.applied[e.topic]; cur != e.offset {
			return applyResult{status: statusConflict, conflict: topicOffset{e.topic, cur}}, nil
		}
	}
	for _, e := range puts {
		mp.data[e.Key] = e.Value
	}
	for _, k := range deletes {
		delete(mp.data, k)
	}
	for i, o := range offsets {
		if o.offset > res.stored[i] {
			mp.applied[o.topic] = o.offset
			res.stored[i] = o.offset
		}
	}
	res.status = statusApplied
	return res, nil
}

func (m *memTable[K, V]) putFenced(_ context.Context, p int32, fence string, token int64, entries []Entry[K, V]) (bool, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mp := m.part(p)
	if cur, ok := mp.fences[fence]; ok && cur > token {
		return false, cur, nil
	}
	mp.fences[fence] = token
	for _, e := range entries {
		mp.data[e.Key] = e.Value
	}
	return true, token, nil
}
