package state

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/effect"
)

// Table is a Store split by input partition, for processors that keep state per key and
// want each batch's effects applied exactly once. In Redis every key of partition p shares
// one Cluster hash slot through the hash tag {namespace:p}, so a batch's writes and the
// partition's applied offsets commit atomically, in one Lua script, on any deployment
// (single node, Sentinel, Cluster).
//
// Table implements processor.Checkpoint (structurally: state does not import processor):
// give it to processor.WithCheckpoint and write each batch through Apply with
// Batch.NextOffsets.
//
// Layout in Redis, for namespace ns and partition p:
//
//	{ns:p}:k:<encoded key>   the value of a key (a string)
//	{ns:p}:applied           hash: input topic -> next offset to apply
//	{ns:p}:fences            hash: fence name -> highest token seen
//
// A Redis ACL that confines a table to its keys is ~{ns:* .
//
// A Table remembers, per partition, the applied offsets it last saw (from Applied or its
// own Apply) and Apply refuses to write when they have changed since (see
// [ConflictError]): a former owner of the partition that wakes up from a pause cannot
// overwrite its successor's state, and a writer whose acknowledged batches Redis lost
// (restart without persistence, failover) stops instead of building on the older state.
// One Table per process is meant to be the only writer of the partitions that process
// owns; use Fork for a second, independent writer.
type Table[K comparable, V any] struct {
	ns string
	b  tableBackend[K, V]

	mu   sync.Mutex
	seen map[int32]map[string]int64 // per partition: topic -> applied offset last seen
}

// tableBackend moves a table's data. Partitions are validated and errors wrapped by Table.
type tableBackend[K comparable, V any] interface {
	kind() string
	// encodeKey is the key as the table's producers encode it, for PartitionOf.
	encodeKey(key K) ([]byte, error)
	// checkEncode reports an error encoding any of the keys or values apply would write.
	checkEncode(puts []Entry[K, V], deletes []K) error
	get(ctx context.Context, p int32, key K) (V, bool, error)
	getMany(ctx context.Context, p int32, keys []K) ([]V, []bool, error)
	putMany(ctx context.Context, p int32, entries []Entry[K, V]) error
	del(ctx context.Context, p int32, keys []K) error
	applied(ctx context.Context, p int32, topic string) (int64, error)
	apply(ctx context.Context, p int32, puts []Entry[K, V], deletes []K, offsets, expect []topicOffset) (applyResult, error)
	putFenced(ctx context.Context, p int32, fence string, token int64, entries []Entry[K, V]) (ok bool, highest int64, err error)
}

type topicOffset struct {
	topic  string
	offset int64
}

type applyStatus int

const (
	statusAlready applyStatus = iota
	statusApplied
	statusConflict
)

type applyResult struct {
	status applyStatus
	// stored[i] is the offset recorded for offsets[i].topic after the call (statusApplied,
	// statusAlready).
	stored []int64
	// The first topic whose stored offset differs from the expected one (statusConflict).
	conflict topicOffset
}

// NewTable returns a Table in Redis under namespace (see NewRedis for the client and the
// namespace rules). The client is never closed by the table.
func NewTable[K comparable, V any](client redis.UniversalClient, namespace string, key codec.Codec[K], value codec.Codec[V], opts ...RedisOption) (*Table[K, V], error) {
	var errs []error
	if client == nil {
		errs = append(errs, errors.New("state: NewTable: nil client"))
	}
	if err := validNamespace(namespace); err != nil {
		errs = append(errs, err)
	}
	if key == nil || value == nil {
		errs = append(errs, errors.New("state: NewTable: key and value codecs are required"))
	}
	o, err := buildOptions(opts)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return newTable(namespace, tableBackend[K, V](&redisTable[K, V]{c: client, ns: namespace, key: key, val: value, ttl: o.ttl})), nil
}

// NewMemoryTable returns an empty in-memory Table with the same semantics as a Redis one
// (atomic Apply, applied offsets, conflicts, fences), for tests and examples. Values are
// kept as given, not copied: see Memory.
//
// Its state lives as long as the process. A processor checkpointed on it commits the
// applied offsets it records, so its group's next run, in a new process with a new empty
// table, fails with processor.ErrCheckpointBehind rather than resume without the state:
// use a Redis table (NewTable) for a group that outlives its process, or reset the group
// to the earliest offsets before each run.
func NewMemoryTable[K comparable, V any]() *Table[K, V] {
	return newTable("memory", tableBackend[K, V](&memTable[K, V]{parts: map[int32]*memPart[K, V]{}}))
}

func newTable[K comparable, V any](ns string, b tableBackend[K, V]) *Table[K, V] {
	return &Table[K, V]{ns: ns, b: b, seen: map[int32]map[string]int64{}}
}

// Fork returns another Table over the same data that has seen no applied offsets yet, as
// a second process opening the same namespace would. Tests use it to play a partition's
// next owner.
func (t *Table[K, V]) Fork() *Table[K, V] { return newTable(t.ns, t.b) }

// Namespace returns the table's namespace ("memory" for an in-memory table).
func (t *Table[K, V]) Namespace() string { return t.ns }

func (t *Table[K, V]) fail(op string, p int32, keys int, err error) error {
	ns := t.ns
	if t.b.kind() == "memory" {
		ns = ""
	}
	return &Error{Store: t.b.kind(), Op: op, Namespace: ns, Partition: p, Keys: keys, Err: err}
}

func checkPartition(p int32) error {
	if p < 0 {
		return fmt.Errorf("partition %d: must be >= 0", p)
	}
	return nil
}

// Partition returns the Store of partition p: plain reads and writes of its keys, with no
// offsets recorded. Reads see the effects of every Apply of p. Use it to read the current
// values a batch builds on; write through Apply.
func (t *Table[K, V]) Partition(p int32) Store[K, V] { return partitionStore[K, V]{t: t, p: p} }

// Applied returns the offset after the last applied record of topic in partition (0 when
// nothing is applied): the processor skips records below it on assignment. It also
// records the offset as the one this Table expects to find at its next Apply of the
// partition, so call it from the partition's owner (the processor does, on assignment).
func (t *Table[K, V]) Applied(ctx context.Context, topic string, partition int32) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, t.fail("Applied", partition, 0, err)
	}
	if err := checkPartition(partition); err != nil {
		return 0, t.fail("Applied", partition, 0, err)
	}
	next, err := t.b.applied(ctx, partition, topic)
	if err != nil {
		return 0, t.fail("Applied", partition, 0, err)
	}
	t.mu.Lock()
	t.seenOf(partition)[topic] = next
	t.mu.Unlock()
	return next, nil
}

// Recorded returns the applied offset of topic in partition as this Table last read or
// wrote it (Applied, Apply), without asking Redis; ok is false when it has none. A
// processor given the table as its checkpoint records it with its commits, so that at
// the next assignment a table that lost writes (Applied reports less) is detected
// instead of silently resumed (processor.Recorder).
func (t *Table[K, V]) Recorded(topic string, partition int32) (next int64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	next, ok = t.seen[partition][topic]
	return next, ok
}

// seenOf returns the partition's seen map; t.mu must be held.
func (t *Table[K, V]) seenOf(p int32) map[string]int64 {
	m := t.seen[p]
	if m == nil {
		m = map[string]int64{}
		t.seen[p] = m
	}
	return m
}

// Apply writes puts and deletes of partition (deletes after puts, so a key in both ends
// up deleted) and records offsets (input topic -> next offset, as Batch.NextOffsets
// returns) as the partition's applied offsets, atomically: all of it or none of it.
//
//   - If every given offset is at or below the one already recorded, nothing is written
//     and ErrAlreadyApplied is returned: the batch's effects are in already. This makes
//     Apply idempotent under replays and under client retries (go-redis resends a command
//     whose connection broke, even when Redis had run it); treat ErrAlreadyApplied as
//     success.
//   - Otherwise, if this Table has seen the partition's offsets (Applied, or an earlier
//     Apply) and they have changed since, nothing is written and a *ConflictError is
//     returned: errors.Is(err, ErrFenced) when another writer moved them on,
//     errors.Is(err, ErrStateLost) when they went back (Redis lost writes).
//   - Otherwise everything is written and each topic's applied offset becomes the larger
//     of the recorded and the given one (applied offsets never go back).
//
// offsets must not be empty and its offsets must be >= 0. Keys and values are encoded
// before anything is sent, so an encoding error writes nothing.
//
// Called with a processor handler's context (the table given to
// processor.WithCheckpoint), Apply returns once the writes are checked and staged in the
// batch: reads through that context (Partition(p).Get, GetMany) see them at once, and
// the processor makes them, as described above, only after every output of the batch
// is acknowledged and before it commits the batch's input offsets (at-least-once), or
// once the transaction holding the batch's outputs and offsets commits (exactly-once).
// Outputs that never reach the broker then leave no effects behind, and the records are
// handled again. An error making the writes then (a conflict, an encoding error) stops
// the processor; Redis being out of reach is retried.
func (t *Table[K, V]) Apply(ctx context.Context, partition int32, puts []Entry[K, V], deletes []K, offsets map[string]int64) error {
	if staged := effect.FromContext(ctx); staged != nil {
		return t.stage(staged, partition, puts, deletes, offsets)
	}
	return t.apply(ctx, partition, puts, deletes, offsets)
}

// stagedKey names a key of one table partition among a batch's staged writes.
type stagedKey[K comparable, V any] struct {
	t   *Table[K, V]
	p   int32
	key K
}

// stage holds an Apply called from a processor's handler back until the batch's outputs
// are acknowledged: the writes are checked and kept in the batch (the handler's reads
// through its context see them at once), and the processor makes them with the offsets
// before it commits the batch's input offsets. So a batch whose outputs never reach the
// broker leaves no effects, and its records are handled again on restart.
func (t *Table[K, V]) stage(b *effect.Batch, partition int32, puts []Entry[K, V], deletes []K, offsets map[string]int64) error {
	keys := len(puts) + len(deletes)
	if err := checkPartition(partition); err != nil {
		return t.fail("Apply", partition, keys, err)
	}
	if len(offsets) == 0 {
		return t.fail("Apply", partition, keys, errors.New("no offsets given: Apply records the batch's offsets with its effects (use Partition(p).PutMany for unrecorded writes)"))
	}
	for topic, off := range offsets {
		if off < 0 {
			return t.fail("Apply", partition, keys, fmt.Errorf("offset %d of topic %q: must be >= 0", off, topic))
		}
	}
	// An encoding error is the handler's to see now, as it would be without staging.
	if err := t.b.checkEncode(puts, deletes); err != nil {
		return t.fail("Apply", partition, keys, err)
	}
	// The caller may reuse its slices and map once Apply returns.
	puts, deletes, offsets = slices.Clone(puts), slices.Clone(deletes), maps.Clone(offsets)
	writes := make([]effect.Write, 0, keys)
	for _, e := range puts {
		writes = append(writes, effect.Write{Key: stagedKey[K, V]{t, partition, e.Key}, Value: e.Value})
	}
	for _, k := range deletes {
		writes = append(writes, effect.Write{Key: stagedKey[K, V]{t, partition, k}, Deleted: true})
	}
	b.Stage(writes, func(ctx context.Context) error {
		err := t.apply(ctx, partition, puts, deletes, offsets)
		if errors.Is(err, ErrAlreadyApplied) {
			return nil // made by an earlier attempt whose answer was lost
		}
		return err
	})
	return nil
}

// staged returns the value of key in partition that ctx's batch has staged, if any.
func (t *Table[K, V]) staged(ctx context.Context, partition int32, key K) (v V, found, ok bool) {
	w, ok := effect.FromContext(ctx).Lookup(stagedKey[K, V]{t, partition, key})
	if !ok {
		return v, false, false
	}
	if w.Deleted {
		return v, false, true
	}
	return w.Value.(V), true, true
}

func (t *Table[K, V]) apply(ctx context.Context, partition int32, puts []Entry[K, V], deletes []K, offsets map[string]int64) error {
	keys := len(puts) + len(deletes)
	if err := ctx.Err(); err != nil {
		return t.fail("Apply", partition, keys, err)
	}
	if err := checkPartition(partition); err != nil {
		return t.fail("Apply", partition, keys, err)
	}
	if len(offsets) == 0 {
		return t.fail("Apply", partition, keys, errors.New("no offsets given: Apply records the batch's offsets with its effects (use Partition(p).PutMany for unrecorded writes)"))
	}
	given := make([]topicOffset, 0, len(offsets))
	for _, topic := range slices.Sorted(maps.Keys(offsets)) {
		off := offsets[topic]
		if off < 0 {
			return t.fail("Apply", partition, keys, fmt.Errorf("offset %d of topic %q: must be >= 0", off, topic))
		}
		given = append(given, topicOffset{topic, off})
	}
	t.mu.Lock()
	var expect []topicOffset
	for _, topic := range slices.Sorted(maps.Keys(t.seen[partition])) {
		expect = append(expect, topicOffset{topic, t.seen[partition][topic]})
	}
	t.mu.Unlock()

	res, err := t.b.apply(ctx, partition, puts, deletes, given, expect)
	if err != nil {
		return t.fail("Apply", partition, keys, err)
	}
	switch res.status {
	case statusApplied:
		t.mu.Lock()
		seen := t.seenOf(partition)
		for i, g := range given {
			seen[g.topic] = res.stored[i]
		}
		t.mu.Unlock()
		return nil
	case statusConflict:
		exp := int64(0)
		for _, e := range expect {
			if e.topic == res.conflict.topic {
				exp = e.offset
			}
		}
		return &ConflictError{Namespace: t.ns, Partition: partition, Topic: res.conflict.topic, Expected: exp, Stored: res.conflict.offset}
	default:
		// Exactly our offsets are recorded: this is our own earlier attempt (a retry after an
		// ambiguous failure) or an identical batch, so what is stored is what we expect.
		same := true
		for i, g := range given {
			same = same && res.stored[i] == g.offset
		}
		if same {
			t.mu.Lock()
			seen := t.seenOf(partition)
			for _, g := range given {
				seen[g.topic] = g.offset
			}
			t.mu.Unlock()
		}
		return ErrAlreadyApplied
	}
}

// PutFenced writes entries to partition if no token higher than token has been seen for
// fence (in that partition), and records token as the fence's highest, atomically. A
// lower token is rejected with a *FencedError (errors.Is(err, ErrFenced)) and nothing is
// written; the same token passes again (the same owner writing more), a higher one
// takes over.
//
// Use it where ownership moves without the table's applied offsets telling: a
// distributed process (fence = its slice, token = distributed.TokenFrom(ctx)), or a
// processor that fences on its own assignment token. With no entries it only claims the
// fence. Tokens must be >= 0.
func (t *Table[K, V]) PutFenced(ctx context.Context, partition int32, fence string, token int64, entries ...Entry[K, V]) error {
	if err := ctx.Err(); err != nil {
		return t.fail("PutFenced", partition, len(entries), err)
	}
	if err := checkPartition(partition); err != nil {
		return t.fail("PutFenced", partition, len(entries), err)
	}
	if fence == "" || token < 0 {
		return t.fail("PutFenced", partition, len(entries), fmt.Errorf("fence %q, token %d: the fence must be named and the token >= 0", fence, token))
	}
	ok, highest, err := t.b.putFenced(ctx, partition, fence, token, entries)
	if err != nil {
		return t.fail("PutFenced", partition, len(entries), err)
	}
	if !ok {
		return &FencedError{Fence: fence, Partition: partition, Token: token, Highest: highest}
	}
	return nil
}

// partitionStore is Table.Partition's Store.
type partitionStore[K comparable, V any] struct {
	t *Table[K, V]
	p int32
}

func (s partitionStore[K, V]) check(ctx context.Context, op string, keys int) error {
	if err := ctx.Err(); err != nil {
		return s.t.fail(op, s.p, keys, err)
	}
	if err := checkPartition(s.p); err != nil {
		return s.t.fail(op, s.p, keys, err)
	}
	return nil
}

func (s partitionStore[K, V]) Get(ctx context.Context, key K) (V, bool, error) {
	var zero V
	if err := s.check(ctx, "Get", 1); err != nil {
		return zero, false, err
	}
	if v, found, ok := s.t.staged(ctx, s.p, key); ok {
		return v, found, nil
	}
	v, ok, err := s.t.b.get(ctx, s.p, key)
	if err != nil {
		return zero, false, s.t.fail("Get", s.p, 1, err)
	}
	return v, ok, nil
}

func (s partitionStore[K, V]) GetMany(ctx context.Context, keys []K) ([]V, []bool, error) {
	if err := s.check(ctx, "GetMany", len(keys)); err != nil {
		return nil, nil, err
	}
	if len(keys) == 0 {
		return []V{}, []bool{}, nil
	}
	if !effect.FromContext(ctx).Staged() {
		v, f, err := s.t.b.getMany(ctx, s.p, keys)
		if err != nil {
			return nil, nil, s.t.fail("GetMany", s.p, len(keys), err)
		}
		return v, f, nil
	}
	// Staged writes first, then the store for the other keys: a write staged by an
	// earlier batch may be made (and unstaged) by another goroutine meanwhile, and the
	// store read after the lookup sees it.
	v, f := make([]V, len(keys)), make([]bool, len(keys))
	var rest []K
	var at []int
	for i, k := range keys {
		if sv, found, ok := s.t.staged(ctx, s.p, k); ok {
			v[i], f[i] = sv, found
			continue
		}
		rest = append(rest, k)
		at = append(at, i)
	}
	if len(rest) == 0 {
		return v, f, nil
	}
	rv, rf, err := s.t.b.getMany(ctx, s.p, rest)
	if err != nil {
		return nil, nil, s.t.fail("GetMany", s.p, len(keys), err)
	}
	for j, i := range at {
		v[i], f[i] = rv[j], rf[j]
	}
	return v, f, nil
}

func (s partitionStore[K, V]) Put(ctx context.Context, key K, value V) error {
	if err := s.check(ctx, "Put", 1); err != nil {
		return err
	}
	if err := s.t.b.putMany(ctx, s.p, []Entry[K, V]{{key, value}}); err != nil {
		return s.t.fail("Put", s.p, 1, err)
	}
	return nil
}

func (s partitionStore[K, V]) PutMany(ctx context.Context, entries []Entry[K, V]) error {
	if err := s.check(ctx, "PutMany", len(entries)); err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	if err := s.t.b.putMany(ctx, s.p, entries); err != nil {
		return s.t.fail("PutMany", s.p, len(entries), err)
	}
	return nil
}

func (s partitionStore[K, V]) Delete(ctx context.Context, keys ...K) error {
	if err := s.check(ctx, "Delete", len(keys)); err != nil {
		return err
	}
	if len(keys) == 0 {
		return nil
	}
	if err := s.t.b.del(ctx, s.p, keys); err != nil {
		return s.t.fail("Delete", s.p, len(keys), err)
	}
	return nil
}

// PartitionOf returns the partition a key encoded as key lands in among partitions:
// the positive murmur2 hash of the bytes modulo the count, as Kafka's Java clients,
// samsa's processor outputs and processor.Producer partition. A service that answers
// lookups uses it to find which table partition (and so which processor instance) holds
// a key. It panics when partitions < 1.
func PartitionOf(key []byte, partitions int32) int32 {
	if partitions < 1 {
		panic(fmt.Sprintf("state: PartitionOf with %d partitions", partitions))
	}
	return int32(int64(murmur2(key)&0x7fffffff) % int64(partitions))
}

// Lookup answers key from any node: it reads the key from the table partition
// PartitionOf puts it in, given the input topic's partition count. The key is encoded
// with the table's key codec, which must encode keys as the input's producers do (the
// table's partitions are the input's). An in-memory table encodes string and []byte
// keys as their bytes and refuses other key types.
func (t *Table[K, V]) Lookup(ctx context.Context, partitions int32, key K) (V, bool, error) {
	var zero V
	if partitions < 1 {
		return zero, false, t.fail("Lookup", -1, 1, fmt.Errorf("partitions = %d, want the input topic's partition count", partitions))
	}
	kb, err := t.b.encodeKey(key)
	if err != nil {
		return zero, false, t.fail("Lookup", -1, 1, err)
	}
	return t.Partition(PartitionOf(kb, partitions)).Get(ctx, key)
}

// murmur2 is Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2): seed
// 0x9747b28c, 4-byte little-endian blocks, the tail folded in, then the final mix.
func murmur2(data []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	n := len(data)
	h := seed ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[n&^3:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}
