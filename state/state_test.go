package state_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/statetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemory(t *testing.T) {
	statetest.TestStore(t, func(t *testing.T) state.Store[string, string] { return state.NewMemory[string, string]() })
}

func TestMemoryTable(t *testing.T) {
	statetest.TestTable(t, func(t *testing.T) *state.Table[string, string] { return state.NewMemoryTable[string, string]() })
}

// checkpoint is processor.Checkpoint, restated: state must not import processor.
type checkpoint interface {
	Applied(ctx context.Context, topic string, partition int32) (next int64, err error)
}

var (
	_ checkpoint                   = (*state.Table[string, int64])(nil)
	_ state.Store[string, float64] = state.NewMemoryTable[string, float64]().Partition(0)
)

func TestNamespaceRules(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { client.Close() })
	tests := []struct {
		ns string
		ok bool
	}{
		{"purchases", true},
		{"app.purchases-v2_x", true},
		{strings.Repeat("n", 128), true},
		{"", false},
		{strings.Repeat("n", 129), false},
		{"a:b", false}, // "a:b" + ":c" would be "a" + ":b:c"
		{"a{b", false}, // braces are the table's hash tag
		{"a}b", false}, // would end the table's hash tag early
		{"with space", false},
		{"tab\t", false},
		{"nul\x00", false},
		{"héllo", false},
	}
	for _, tt := range tests {
		_, err := state.NewRedis(client, tt.ns, codec.String(), codec.String())
		_, terr := state.NewTable(client, tt.ns, codec.String(), codec.String())
		if tt.ok {
			assert.NoError(t, err, "%q", tt.ns)
			assert.NoError(t, terr, "%q", tt.ns)
		} else {
			assert.Error(t, err, "%q", tt.ns)
			assert.Error(t, terr, "%q", tt.ns)
		}
	}
}

func TestConstructorsReportEveryProblem(t *testing.T) {
	_, err := state.NewRedis[string, string](nil, "a:b", nil, codec.String(), state.WithTTL(time.Microsecond))
	require.Error(t, err)
	for _, want := range []string{"nil client", "namespace", "codecs are required", "at least 1ms"} {
		assert.Contains(t, err.Error(), want)
	}
	_, err = state.NewTable[string, string](nil, "", codec.String(), nil)
	require.Error(t, err)
	for _, want := range []string{"nil client", "namespace", "codecs are required"} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestErrorMessage(t *testing.T) {
	cause := errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
	tests := []struct {
		err  *state.Error
		want string
	}{
		{&state.Error{Store: "redis", Op: "PutMany", Namespace: "purchases", Partition: -1, Keys: 12, Err: cause},
			`state: redis PutMany "purchases" (12 keys): dial tcp 127.0.0.1:6379: connect: connection refused`},
		{&state.Error{Store: "redis", Op: "Apply", Namespace: "purchases", Partition: 3, Keys: 1, Err: cause},
			`state: redis Apply "purchases" partition 3 (1 key): dial tcp 127.0.0.1:6379: connect: connection refused`},
		{&state.Error{Store: "memory", Op: "Get", Partition: -1, Err: context.Canceled},
			`state: memory Get: context canceled`},
	}
	for _, tt := range tests {
		assert.EqualError(t, tt.err, tt.want)
		assert.ErrorIs(t, tt.err, tt.err.Err)
	}
	assert.EqualError(t, &state.FencedError{Fence: "slice-3", Partition: 3, Token: 4, Highest: 7},
		`state: fenced write to "slice-3" in partition 3 rejected: token 4 is below the highest seen, 7`)
	assert.ErrorIs(t, &state.ConflictError{}, state.ErrFenced)
	assert.NotErrorIs(t, state.ErrAlreadyApplied, state.ErrFenced)
}

// fakeRedisErr is a reply error as go-redis returns it (it has the RedisError method).
type fakeRedisErr string

func (e fakeRedisErr) Error() string { return string(e) }
func (e fakeRedisErr) RedisError()   {}

// TestErrorPermanent: Redis refusing the credentials or an ACL permission is permanent;
// an outage, a timeout or another reply error is not.
func TestErrorPermanent(t *testing.T) {
	for _, tt := range []struct {
		cause error
		want  bool
	}{
		{fakeRedisErr("WRONGPASS invalid username-password pair or user is disabled."), true},
		{fakeRedisErr("NOAUTH Authentication required."), true},
		{fakeRedisErr("NOPERM this user has no permissions to run the 'hget' command"), true},
		{fmt.Errorf("dial: %w", fakeRedisErr("WRONGPASS invalid username-password pair")), true},
		{fakeRedisErr("LOADING Redis is loading the dataset in memory"), false},
		{errors.New("WRONGPASS lookalike that is not a reply error"), false},
		{errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"), false},
		{context.DeadlineExceeded, false},
		{nil, false},
	} {
		e := &state.Error{Store: "redis", Op: "Applied", Partition: 0, Err: tt.cause}
		assert.Equal(t, tt.want, e.Permanent(), "%v", tt.cause)
	}
}

// TestRedisErrorsNameOpNotPayload runs against a port nothing listens on.
func TestRedisErrorsNameOpNotPayload(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	t.Cleanup(func() { client.Close() })
	const secret = "SECRET-PAYLOAD-123"
	s, err := state.NewRedis(client, "purchases", codec.String(), codec.String())
	require.NoError(t, err)
	tbl, err := state.NewTable(client, "purchases", codec.String(), codec.String())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	es := []state.Entry[string, string]{{Key: secret, Value: secret}, {Key: secret + "2", Value: secret}}
	tests := []struct {
		call func() error
		want string
	}{
		{func() error { return s.PutMany(ctx, es) }, `state: redis PutMany "purchases" (2 keys): `},
		{func() error { _, _, err := s.Get(ctx, secret); return err }, `state: redis Get "purchases" (1 key): `},
		{func() error { return tbl.Apply(ctx, 3, es, nil, map[string]int64{"in": 1}) }, `state: redis Apply "purchases" partition 3 (2 keys): `},
		{func() error { return tbl.PutFenced(ctx, 3, "f", 1, es...) }, `state: redis PutFenced "purchases" partition 3 (2 keys): `},
		{func() error { _, _, err := tbl.Partition(5).GetMany(ctx, []string{secret}); return err }, `state: redis GetMany "purchases" partition 5 (1 key): `},
	}
	for _, tt := range tests {
		err := tt.call()
		require.Error(t, err)
		assert.True(t, strings.HasPrefix(err.Error(), tt.want), "%q does not start with %q", err, tt.want)
		assert.Contains(t, err.Error(), "connection refused")
		assert.NotContains(t, err.Error(), secret)
		var se *state.Error
		assert.ErrorAs(t, err, &se)
	}
}

func TestMemoryValuesAreNotCopied(t *testing.T) {
	ctx := context.Background()
	m := state.NewMemory[string, []int]()
	v := []int{1, 2}
	require.NoError(t, m.Put(ctx, "k", v))
	v[0] = 9
	got, _, err := m.Get(ctx, "k")
	require.NoError(t, err)
	assert.Equal(t, []int{9, 2}, got, "documented: the memory store keeps the value itself")
}
