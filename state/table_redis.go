package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/codec"
)

// redisTable is the Redis table backend. Every key of partition p starts with the hash tag
// {ns:p} (the namespace has no '}', so the tag ends after p), so Cluster puts them in one
// slot and a Lua script or an MGET may touch them together.
type redisTable[K comparable, V any] struct {
	c   redis.UniversalClient
	ns  string
	key codec.Codec[K]
	val codec.Codec[V]
	ttl time.Duration
}

func (r *redisTable[K, V]) kind() string { return "redis" }

func (r *redisTable[K, V]) encodeKey(key K) ([]byte, error) { return r.key.Encode(key) }

func (r *redisTable[K, V]) tag(p int32) string {
	return "{" + r.ns + ":" + strconv.FormatInt(int64(p), 10) + "}"
}

func (r *redisTable[K, V]) appliedKey(p int32) string { return r.tag(p) + ":applied" }
func (r *redisTable[K, V]) fencesKey(p int32) string  { return r.tag(p) + ":fences" }

// dataKeys encodes keys as tag + ":k:" + encoded key.
func (r *redisTable[K, V]) dataKeys(p int32, keys []K, into []string) ([]string, error) {
	prefix := r.tag(p) + ":k:"
	for i, k := range keys {
		b, err := r.key.Encode(k)
		if err != nil {
			return nil, fmt.Errorf("encode key %d: %w", i, err)
		}
		into = append(into, joinKey(prefix, b))
	}
	return into, nil
}

func (r *redisTable[K, V]) checkEncode(puts []Entry[K, V], deletes []K) error {
	for i := range puts {
		if _, err := r.key.Encode(puts[i].Key); err != nil {
			return fmt.Errorf("encode key %d: %w", i, err)
		}
		if _, err := r.val.Encode(puts[i].Value); err != nil {
			return fmt.Errorf("encode value %d: %w", i, err)
		}
	}
	for i, k := range deletes {
		if _, err := r.key.Encode(k); err != nil {
			return fmt.Errorf("encode key %d: %w", len(puts)+i, err)
		}
	}
	return nil
}

// encodeEntries appends the entries' data keys to keys and their encoded values to vals.
func (r *redisTable[K, V]) encodeEntries(p int32, entries []Entry[K, V], keys []string, vals []any) ([]string, []any, error) {
	prefix := r.tag(p) + ":k:"
	for i := range entries {
		kb, err := r.key.Encode(entries[i].Key)
		if err != nil {
			return nil, nil, fmt.Errorf("encode key %d: %w", i, err)
		}
		vb, err := r.val.Encode(entries[i].Value)
		if err != nil {
			return nil, nil, fmt.Errorf("encode value %d: %w", i, err)
		}
		keys = append(keys, joinKey(prefix, kb))
		vals = append(vals, vb)
	}
	return keys, vals, nil
}

func (r *redisTable[K, V]) ttlArg() string { return strconv.FormatInt(r.ttl.Milliseconds(), 10) }

func (r *redisTable[K, V]) get(ctx context.Context, p int32, key K) (V, bool, error) {
	var zero V
	keys, err := r.dataKeys(p, []K{key}, nil)
	if err != nil {
		return zero, false, err
	}
	b, err := r.c.Get(ctx, keys[0]).Bytes()
	if err == redis.Nil {
		return zero, false, nil
	}
	if err != nil {
		return zero, false, err
	}
	v, err := r.val.Decode(b)
	if err != nil {
		return zero, false, fmt.Errorf("decode value: %w", err)
	}
	return v, true, nil
}

// getMany is one MGET: the keys share a slot, and one command reads them at one instant,
// never half of an Apply.
func (r *redisTable[K, V]) getMany(ctx context.Context, p int32, keys []K) ([]V, []bool, error) {
	rks, err := r.dataKeys(p, keys, make([]string, 0, len(keys)))
	if err != nil {
		return nil, nil, err
	}
	raw, err := r.c.MGet(ctx, rks...).Result()
	if err != nil {
		return nil, nil, err
	}
	if len(raw) != len(keys) {
		return nil, nil, fmt.Errorf("MGET returned %d values for %d keys", len(raw), len(keys))
	}
	values, found := make([]V, len(keys)), make([]bool, len(keys))
	for i, x := range raw {
		if x == nil {
			continue
		}
		s, ok := x.(string)
		if !ok {
			return nil, nil, fmt.Errorf("MGET value %d: unexpected reply type %T", i, x)
		}
		if values[i], err = r.val.Decode([]byte(s)); err != nil {
			return nil, nil, fmt.Errorf("decode value %d: %w", i, err)
		}
		found[i] = true
	}
	return values, found, nil
}

// putMany is one MSET (atomic), or with a TTL one pipeline of SET … PX.
func (r *redisTable[K, V]) putMany(ctx context.Context, p int32, entries []Entry[K, V]) error {
	keys, vals, err := r.encodeEntries(p, entries, make([]string, 0, len(entries)), make([]any, 0, len(entries)))
	if err != nil {
		return err
	}
	if len(entries) == 1 {
		return r.c.Set(ctx, keys[0], vals[0], r.ttl).Err()
	}
	if r.ttl == 0 {
		args := make([]any, 0, 2*len(keys))
		for i := range keys {
			args = append(args, keys[i], vals[i])
		}
		return r.c.MSet(ctx, args...).Err()
	}
	pipe := r.c.Pipeline()
	for i := range keys {
		pipe.Set(ctx, keys[i], vals[i], r.ttl)
	}
	_, err = pipe.Exec(ctx)
	return err
}

func (r *redisTable[K, V]) del(ctx context.Context, p int32, keys []K) error {
	rks, err := r.dataKeys(p, keys, make([]string, 0, len(keys)))
	if err != nil {
		return err
	}
	return r.c.Del(ctx, rks...).Err()
}

func (r *redisTable[K, V]) applied(ctx context.Context, p int32, topic string) (int64, error) {
	s, err := r.c.HGet(ctx, r.appliedKey(p), topic).Result()
	if err == redis.Nil {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("applied offset of topic %q is not an integer", topic)
	}
	return n, nil
}

// luaGreater compares non-negative decimal integers without leading zeros as strings:
// exact over the whole int64 range, where Lua's numbers (doubles) are exact only to 2^53.
const luaGreater = `
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
`

// applyScript records a batch's offsets with its writes, atomically.
//
// KEYS[1] is the partition's applied hash, KEYS[2..] the data keys: nPuts puts, then
// deletes. ARGV: nTopics, nExpect, nPuts, ttl in ms ("0": none), then nTopics pairs
// (topic, next offset), nExpect pairs (topic, expected applied offset), nPuts values.
//
// Reply: {0, stored...} nothing newer (already applied); {2, topic, stored} another
// writer moved the offsets; {1, stored...} written. stored[i] is topic i's offset after
// the call.
//
// Every read and check comes before the first write, and the writes (SET, DEL, HSET)
// cannot fail on a well-formed keyspace, so the script never stops half way.
var applyScript = redis.NewScript(luaGreater + `
local h = KEYS[1]
local nt, ne, np, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local base = 5
local cur = {}
local newer = false
for i = 0, nt - 1 do
  local c = redis.call('HGET', h, ARGV[base + 2*i]) or '0'
  cur[i + 1] = c
  if gt(ARGV[base + 2*i + 1], c) then newer = true end
end
if not newer then
  local out = {0}
  for i = 1, nt do out[i + 1] = cur[i] end
  return out
end
base = base + 2*nt
for i = 0, ne - 1 do
  local t = ARGV[base + 2*i]
  local c = redis.call('HGET', h, t) or '0'
  if c ~= ARGV[base + 2*i + 1] then return {2, t, c} end
end
base = base + 2*ne
if ttl ~= '0' then
  for i = 1, np do redis.call('SET', KEYS[1 + i], ARGV[base + i - 1], 'PX', ttl) end
else
  -- MSET in chunks: far fewer redis.call round trips into the server than one SET each.
  local args = {}
  for i = 1, np do
    args[#args + 1] = KEYS[1 + i]
    args[#args + 1] = ARGV[base + i - 1]
    if #args >= 512 then redis.call('MSET', unpack(args)); args = {} end
  end
  if #args > 0 then redis.call('MSET', unpack(args)) end
end
local dels = {}
for i = np + 2, #KEYS do
  dels[#dels + 1] = KEYS[i]
  if #dels >= 512 then redis.call('DEL', unpack(dels)); dels = {} end
end
if #dels > 0 then redis.call('DEL', unpack(dels)) end
local out = {1}
for i = 0, nt - 1 do
  local t, off = ARGV[5 + 2*i], ARGV[5 + 2*i + 1]
  if gt(off, cur[i + 1]) then
    redis.call('HSET', h, t, off)
    out[i + 2] = off
  else
    out[i + 2] = cur[i + 1]
  end
end
return out
`)

// fencedScript writes if no higher token was seen for the fence.
//
// KEYS[1] is the partition's fences hash, KEYS[2..] data keys. ARGV: fence, token, ttl in
// ms ("0": none), then one value per data key. Reply: {1, token} written; {0, highest}
// rejected.
var fencedScript = redis.NewScript(luaGreater + `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and gt(cur, ARGV[2]) then return {0, cur} end
if cur ~= ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
for i = 2, #KEYS do
  if ARGV[3] ~= '0' then
    redis.call('SET', KEYS[i], ARGV[i + 2], 'PX', ARGV[3])
  else
    redis.call('SET', KEYS[i], ARGV[i + 2])
  end
end
return {1, ARGV[2]}
`)

func (r *redisTable[K, V]) apply(ctx context.Context, p int32, puts []Entry[K, V], deletes []K, offsets, expect []topicOffset) (applyResult, error) {
	keys := make([]string, 1, 1+len(puts)+len(deletes))
	keys[0] = r.appliedKey(p)
	args := make([]any, 4, 4+2*len(offsets)+2*len(expect)+len(puts))
	args[0], args[1], args[2], args[3] = len(offsets), len(expect), len(puts), r.ttlArg()
	for _, o := range offsets {
		args = append(args, o.topic, strconv.FormatInt(o.offset, 10))
	}
	for _, e := range expect {
		args = append(args, e.topic, strconv.FormatInt(e.offset, 10))
	}
	keys, args, err := r.encodeEntries(p, puts, keys, args)
	if err != nil {
		return applyResult{}, err
	}
	if keys, err = r.dataKeys(p, deletes, keys); err != nil {
		return applyResult{}, err
	}
	reply, err := applyScript.Run(ctx, r.c, keys, args...).Slice()
	if err != nil {
		return applyResult{}, err
	}
	bad := fmt.Errorf("unexpected reply from the apply script (%d elements)", len(reply))
	if len(reply) == 0 {
		return applyResult{}, bad
	}
	status, ok := reply[0].(int64)
	if !ok {
		return applyResult{}, bad
	}
	switch applyStatus(status) {
	case statusConflict:
		if len(reply) != 3 {
			return applyResult{}, bad
		}
		topic, _ := reply[1].(string)
		stored, err := replyInt(reply[2])
		if err != nil {
			return applyResult{}, err
		}
		return applyResult{status: statusConflict, conflict: topicOffset{topic, stored}}, nil
	case statusAlready, statusApplied:
		if len(reply) != 1+len(offsets) {
			return applyResult{}, bad
		}
		res := applyResult{status: applyStatus(status), stored: make([]int64, len(offsets))}
		for i := range offsets {
			if res.stored[i], err = replyInt(reply[1+i]); err != nil {
				return applyResult{}, err
			}
		}
		return res, nil
	}
	return applyResult{}, bad
}

func (r *redisTable[K, V]) putFenced(ctx context.Context, p int32, fence string, token int64, entries []Entry[K, V]) (bool, int64, error) {
	keys := make([]string, 1, 1+len(entries))
	keys[0] = r.fencesKey(p)
	args := make([]any, 3, 3+len(entries))
	args[0], args[1], args[2] = fence, strconv.FormatInt(token, 10), r.ttlArg()
	keys, args, err := r.encodeEntries(p, entries, keys, args)
	if err != nil {
		return false, 0, err
	}
	reply, err := fencedScript.Run(ctx, r.c, keys, args...).Slice()
	if err != nil {
		return false, 0, err
	}
	if len(reply) != 2 {
		return false, 0, fmt.Errorf("unexpected reply from the fence script (%d elements)", len(reply))
	}
	highest, err := replyInt(reply[1])
	if err != nil {
		return false, 0, err
	}
	okStatus, _ := reply[0].(int64)
	return okStatus == 1, highest, nil
}

// replyInt parses a decimal string from a script reply.
func replyInt(x any) (int64, error) {
	s, ok := x.(string)
	if !ok {
		return 0, errors.New("script reply: offset or token is not a string")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errors.New("script reply: offset or token is not an integer")
	}
	return n, nil
}
