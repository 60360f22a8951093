package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Entry is one key and its value, for batch writes.
type Entry[K, V any] struct {
	Key   K
	Value V
}

// Store is a typed key-value table. Implementations are safe for concurrent use.
//
// An absent key is not an error: Get reports it with found == false and the zero V, as
// sync.Map.Load does. Batch calls take and return slices aligned with their arguments and
// cost one round trip to the server, whatever their size; empty calls cost none.
type Store[K comparable, V any] interface {
	// Get returns the value of key, and whether it was there.
	Get(ctx context.Context, key K) (value V, found bool, err error)
	// GetMany returns the values of keys: values[i] and found[i] belong to keys[i]
	// (duplicates included). On error both slices are nil.
	GetMany(ctx context.Context, keys []K) (values []V, found []bool, err error)
	// Put sets key to value.
	Put(ctx context.Context, key K, value V) error
	// PutMany sets every entry, in order (the last of duplicate keys wins). It is not
	// atomic: on error some entries may be written (see Table.Apply for atomic batches).
	PutMany(ctx context.Context, entries []Entry[K, V]) error
	// Delete removes keys; keys that are absent are fine.
	Delete(ctx context.Context, keys ...K) error
}

var (
	// ErrAlreadyApplied is returned by Table.Apply when every offset it was given is at or
	// below the one already recorded for the partition: the batch's effects are in the
	// table already and nothing was written. Treat it as success.
	ErrAlreadyApplied = errors.New("state: batch already applied")

	// ErrFenced reports a write rejected because another writer has taken over: a higher
	// fencing token was seen ([FencedError]), or the partition's applied offsets were
	// moved by another writer ([ConflictError]).
	ErrFenced = errors.New("state: write fenced off by a newer writer")

	// ErrStateLost reports that a table partition's applied offsets went back below what
	// this Table had seen: the store lost acknowledged writes (a Redis restart without
	// persistence, a crash within the appendfsync window, a failover to a lagging
	// replica). See [ConflictError].
	ErrStateLost = errors.New("state: applied offsets went back: the store lost acknowledged writes")
)

// Error is a failed store operation. It names the operation, the store kind, the
// namespace and (for tables) the partition, and how many keys the call carried, never the
// keys or values themselves: they can be personal data, and errors end up in logs.
type Error struct {
	Store     string // "redis" or "memory"
	Op        string // the method: "Get", "PutMany", "Apply", ...
	Namespace string
	Partition int32 // the table partition, -1 for a plain store
	Keys      int   // how many keys the call carried (0 when not relevant)
	Err       error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("state: ")
	b.WriteString(e.Store)
	b.WriteByte(' ')
	b.WriteString(e.Op)
	if e.Namespace != "" {
		b.WriteByte(' ')
		b.WriteString(strconv.Quote(e.Namespace))
	}
	if e.Partition >= 0 {
		b.WriteString(" partition ")
		b.WriteString(strconv.Itoa(int(e.Partition)))
	}
	if e.Keys > 0 {
		fmt.Fprintf(&b, " (%d key", e.Keys)
		if e.Keys > 1 {
			b.WriteByte('s')
		}
		b.WriteByte(')')
	}
	b.WriteString(": ")
	if e.Err == nil {
		b.WriteString("unknown error")
	} else {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error (a go-redis or net error, a codec error, a context
// error).
func (e *Error) Unwrap() error { return e.Err }

// Permanent reports whether retrying the call cannot help because Redis refused access:
// the client's credentials (WRONGPASS, NOAUTH) or a permission its ACL user lacks
// (NOPERM; see "Redis ACL" in the package doc). Anything else (Redis down, a timeout)
// may pass. A processor given a table as its checkpoint fails Run on a permanent error
// instead of waiting for Redis to answer.
func (e *Error) Permanent() bool { return accessDenied(e.Err) }

// accessDenied tells Redis's refusals of the client's credentials or ACL permissions.
func accessDenied(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	for _, prefix := range []string{"WRONGPASS", "NOAUTH", "NOPERM"} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

// FencedError is returned by Table.PutFenced when a token higher than Token has been
// seen for Fence in that partition. errors.Is(err, ErrFenced) holds.
type FencedError struct {
	Fence     string
	Partition int32
	Token     int64 // the token of the rejected write
	Highest   int64 // the highest token seen for the fence
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("state: fenced write to %q in partition %d rejected: token %d is below the highest seen, %d",
		e.Fence, e.Partition, e.Token, e.Highest)
}

// Is makes errors.Is(err, ErrFenced) true.
func (e *FencedError) Is(target error) bool { return target == ErrFenced }

// ConflictError is returned by Table.Apply when the partition's applied offset for Topic
// is no longer the one this Table last saw (through Applied or its own Apply), so the
// batch was computed from state that has changed under it, and nothing was written:
//
//   - Stored > Expected: another writer, the partition's new owner, has applied batches
//     since. errors.Is(err, ErrFenced) holds. This writer has lost the partition.
//   - Stored < Expected: the store lost writes this Table saw acknowledged.
//     errors.Is(err, ErrStateLost) holds. State and offsets went back together, but
//     the consumer group's committed offsets did not: the lost batches are not replayed
//     unless the partition is read again from Stored.
//
// Either way, call Applied again (a new assignment does) before applying more.
type ConflictError struct {
	Namespace string
	Partition int32
	Topic     string
	Expected  int64 // the applied offset this Table last saw
	Stored    int64 // the applied offset found in the store
}

func (e *ConflictError) Error() string {
	if e.Stored < e.Expected {
		return fmt.Sprintf("state: Apply to %q partition %d rejected: topic %q is applied up to %d, behind the %d already seen: the store lost acknowledged writes",
			e.Namespace, e.Partition, e.Topic, e.Stored, e.Expected)
	}
	return fmt.Sprintf("state: Apply to %q partition %d rejected: topic %q was applied up to %d by another writer (this one last saw %d)",
		e.Namespace, e.Partition, e.Topic, e.Stored, e.Expected)
}

// Permanent reports true: retrying the same Apply cannot help.
func (e *ConflictError) Permanent() bool { return true }

// Is makes errors.Is(err, ErrFenced) true when another writer moved the offsets on, and
// errors.Is(err, ErrStateLost) when they went back.
func (e *ConflictError) Is(target error) bool {
	if e.Stored < e.Expected {
		return target == ErrStateLost
	}
	return target == ErrFenced
}

// maxNamespace bounds namespace length; keys repeat it, so it should stay short.
const maxNamespace = 128

// validNamespace checks that ns can prefix keys unambiguously: the first ':' of a plain
// key ends the namespace, and a table's hash tag {ns:p} ends at the first '}'. So ':',
// '{' and '}' are not allowed, nor spaces and control bytes (keys are typed in redis-cli
// and ACL patterns).
func validNamespace(ns string) error {
	if ns == "" || len(ns) > maxNamespace {
		return fmt.Errorf("state: namespace must be 1 to %d bytes long, got %d", maxNamespace, len(ns))
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		if c <= ' ' || c >= 0x7f || c == ':' || c == '{' || c == '}' {
			return fmt.Errorf("state: namespace %q: only printable ASCII without spaces, ':', '{' or '}' is allowed (byte %d is %q)", ns, i, c)
		}
	}
	return nil
}
