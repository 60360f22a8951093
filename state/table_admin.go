package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// TableAdmin inspects and maintains the Redis data of a Table's namespace without
// knowing its key and value types: what operations tools need (the samsa command's
// reset and table compare). Keys and values are handled as the bytes their codecs made.
//
// It is not a writer of the table: use it on a namespace whose writers are stopped
// (ClearPartition) or to read one (Applied, Compare), knowing that a read of a namespace
// being written sees each partition's keys at slightly different instants.
type TableAdmin struct {
	c  redis.UniversalClient
	ns string
}

// NewTableAdmin returns an admin of namespace's table data in client (which it never
// closes).
func NewTableAdmin(client redis.UniversalClient, namespace string) (*TableAdmin, error) {
	if client == nil {
		return nil, errors.New("state: NewTableAdmin: nil client")
	}
	if err := validNamespace(namespace); err != nil {
		return nil, err
	}
	return &TableAdmin{c: client, ns: namespace}, nil
}

// Namespace returns the namespace administered.
func (a *TableAdmin) Namespace() string { return a.ns }

func (a *TableAdmin) tag(p int32) string {
	return "{" + a.ns + ":" + strconv.FormatInt(int64(p), 10) + "}"
}

// Applied returns partition p's applied offsets: input topic -> the offset after the last
// record whose effects the table holds (empty when nothing is applied).
func (a *TableAdmin) Applied(ctx context.Context, p int32) (map[string]int64, error) {
	raw, err := a.c.HGetAll(ctx, a.tag(p)+":applied").Result()
	if err != nil {
		return nil, a.fail("Applied", p, err)
	}
	out := make(map[string]int64, len(raw))
	for topic, s := range raw {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, a.fail("Applied", p, fmt.Errorf("applied offset of topic %q is not an integer", topic))
		}
		out[topic] = n
	}
	return out, nil
}

// Partitions returns the partitions that hold any key of the namespace (data, applied
// offsets or fences), in order.
func (a *TableAdmin) Partitions(ctx context.Context) ([]int32, error) {
	prefix := "{" + a.ns + ":"
	seen := map[int32]bool{}
	err := scanKeys(ctx, a.c, globEscape(prefix)+"*", func(k string) {
		rest := strings.TrimPrefix(k, prefix)
		end := strings.IndexByte(rest, '}')
		if end <= 0 {
			return
		}
		if p, err := strconv.ParseInt(rest[:end], 10, 32); err == nil && p >= 0 {
			seen[int32(p)] = true
		}
	})
	if err != nil {
		return nil, a.fail("Partitions", -1, err)
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

// ClearPartition deletes every key of partition p: its data, applied offsets and fences,
// as if nothing had been applied. It is not atomic (a scan, then deletes): stop the
// partition's writers first. It returns how many keys it deleted.
func (a *TableAdmin) ClearPartition(ctx context.Context, p int32) (int, error) {
	var keys []string
	if err := scanKeys(ctx, a.c, globEscape(a.tag(p))+":*", func(k string) { keys = append(keys, k) }); err != nil {
		return 0, a.fail("ClearPartition", p, err)
	}
	for chunk := range slices.Chunk(keys, 512) {
		// Every key of p shares one hash slot, so a multi-key DEL is valid on Cluster.
		if err := a.c.Del(ctx, chunk...).Err(); err != nil {
			return 0, a.fail("ClearPartition", p, err)
		}
	}
	return len(keys), nil
}

// PartitionDiff compares one partition of two namespaces.
type PartitionDiff struct {
	Partition int32 `json:"partition"`
	// Applied offsets of each side (input topic -> next offset).
	AppliedA map[string]int64 `json:"applied_a"`
	AppliedB map[string]int64 `json:"applied_b"`
	// KeysA and KeysB count each side's data keys.
	KeysA int `json:"keys_a"`
	KeysB int `json:"keys_b"`
	// OnlyA and OnlyB count keys one side has and the other lacks; Differ counts keys
	// whose values differ.
	OnlyA  int `json:"only_a"`
	OnlyB  int `json:"only_b"`
	Differ int `json:"differ"`
	// Examples are up to five differing keys (as their codec encoded them).
	Examples []string `json:"examples,omitempty"`
}

// Equal reports whether both sides hold the same keys and values and the same applied
// offsets.
func (d PartitionDiff) Equal() bool {
	return d.OnlyA == 0 && d.OnlyB == 0 && d.Differ == 0 && maps.Equal(d.AppliedA, d.AppliedB)
}

// Compare compares the data and applied offsets of a and b partition by partition, over
// every partition either holds. Values are compared as bytes.
func Compare(ctx context.Context, a, b *TableAdmin) ([]PartitionDiff, error) {
	pa, err := a.Partitions(ctx)
	if err != nil {
		return nil, err
	}
	pb, err := b.Partitions(ctx)
	if err != nil {
		return nil, err
	}
	parts := slices.Compact(slices.Sorted(slices.Values(append(pa, pb...))))
	out := make([]PartitionDiff, 0, len(parts))
	for _, p := range parts {
		d := PartitionDiff{Partition: p}
		if d.AppliedA, err = a.Applied(ctx, p); err != nil {
			return nil, err
		}
		if d.AppliedB, err = b.Applied(ctx, p); err != nil {
			return nil, err
		}
		va, err := a.data(ctx, p)
		if err != nil {
			return nil, err
		}
		vb, err := b.data(ctx, p)
		if err != nil {
			return nil, err
		}
		d.KeysA, d.KeysB = len(va), len(vb)
		note := func(k string) {
			if len(d.Examples) < 5 {
				d.Examples = append(d.Examples, k)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(va)) {
			v2, ok := vb[k]
			switch {
			case !ok:
				d.OnlyA++
				note(k)
			case !bytes.Equal(va[k], v2):
				d.Differ++
				note(k)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(vb)) {
			if _, ok := va[k]; !ok {
				d.OnlyB++
				note(k)
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// data returns partition p's data: encoded key -> encoded value.
func (a *TableAdmin) data(ctx context.Context, p int32) (map[string][]byte, error) {
	prefix := a.tag(p) + ":k:"
	var keys []string
	if err := scanKeys(ctx, a.c, globEscape(prefix)+"*", func(k string) { keys = append(keys, k) }); err != nil {
		return nil, a.fail("Compare", p, err)
	}
	out := make(map[string][]byte, len(keys))
	for chunk := range slices.Chunk(keys, 512) {
		vals, err := a.c.MGet(ctx, chunk...).Result()
		if err != nil {
			return nil, a.fail("Compare", p, err)
		}
		for i, v := range vals {
			if s, ok := v.(string); ok { // nil: deleted since the scan
				out[strings.TrimPrefix(chunk[i], prefix)] = []byte(s)
			}
		}
	}
	return out, nil
}

func (a *TableAdmin) fail(op string, p int32, err error) error {
	return &Error{Store: "redis", Op: op, Namespace: a.ns, Partition: p, Err: err}
}

// scanKeys calls fn with every key matching pattern, on every master of a Cluster.
func scanKeys(ctx context.Context, c redis.UniversalClient, pattern string, fn func(string)) error {
	one := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			fn(iter.Val())
		}
		return iter.Err()
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		var mu sync.Mutex // fn is called from one goroutine per master
		return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			var keys []string
			iter := node.Scan(ctx, 0, pattern, 1000).Iterator()
			for iter.Next(ctx) {
				keys = append(keys, iter.Val())
			}
			if err := iter.Err(); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			for _, k := range keys {
				fn(k)
			}
			return nil
		})
	}
	return one(ctx, c)
}

// globEscape escapes Redis glob specials in s, for a literal prefix in a SCAN pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
