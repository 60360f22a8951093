package distributed

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/internal/group"
)

// The public names convert through group.ParseProtocol, the one mapping processor uses
// too.
func TestProtocolNames(t *testing.T) {
	for _, tc := range []struct {
		p    Protocol
		want group.Protocol
	}{{"", group.Cooperative}, {Cooperative, group.Cooperative}, {Eager, group.Eager}, {Consumer, group.Consumer}} {
		m, err := Config{Membership: Membership{Protocol: tc.p}}.membership()
		require.NoError(t, err, "%q", tc.p)
		assert.Equal(t, tc.want, m.Protocol, "%q", tc.p)
	}
	_, err := Config{Membership: Membership{Protocol: "sticky"}}.membership()
	assert.EqualError(t, err, `Protocol "sticky": want "cooperative", "eager" or "consumer"`)
}

func TestConfigMembershipDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want group.Membership
	}{
		{
			name: "zero: distributed's own session and heartbeat, the shared max poll interval",
			want: group.Membership{Protocol: group.Cooperative, SessionTimeout: 10 * time.Second, HeartbeatInterval: time.Second, MaxPollInterval: 5 * time.Minute},
		},
		{
			name: "set fields are kept",
			cfg:  Config{Membership: Membership{Protocol: Consumer, InstanceID: "n1", SessionTimeout: 20 * time.Second, HeartbeatInterval: 2 * time.Second, MaxPollInterval: time.Minute}},
			want: group.Membership{Protocol: group.Consumer, InstanceID: "n1", SessionTimeout: 20 * time.Second,
				HeartbeatInterval: 2 * time.Second, MaxPollInterval: time.Minute},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.cfg.membership()
			require.NoError(t, err)
			assert.Equal(t, tc.want, m)
			d := tc.cfg.withDefaults()
			assert.Equal(t, []time.Duration{m.SessionTimeout, m.HeartbeatInterval, m.MaxPollInterval},
				[]time.Duration{d.SessionTimeout, d.HeartbeatInterval, d.MaxPollInterval}, "the Config's defaults are the membership's")
		})
	}
}

func TestConfigValidateMembership(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "defaults are valid", cfg: Config{Membership: Membership{Brokers: "b"}}},
		{
			name: "negative durations",
			cfg:  Config{Membership: Membership{Brokers: "b", StopTimeout: -1, SessionTimeout: -time.Second, HeartbeatInterval: -time.Second, MaxPollInterval: -time.Second}},
			want: []string{"StopTimeout = -1ns, must not be negative", "SessionTimeout = -1s, must not be negative",
				"HeartbeatInterval = -1s, must not be negative", "MaxPollInterval = -1s, must not be negative"},
		},
		{
			name: "heartbeat checked against distributed's default session timeout",
			cfg:  Config{Membership: Membership{Brokers: "b", HeartbeatInterval: 10 * time.Second}},
			want: []string{"HeartbeatInterval (10s) must be below SessionTimeout (10s)"},
		},
		{
			name: "no heartbeat check with the consumer protocol",
			cfg:  Config{Membership: Membership{Brokers: "b", Protocol: Consumer, HeartbeatInterval: 10 * time.Second}},
		},
		{
			name: "liveness margin must leave two heartbeats",
			cfg:  Config{Membership: Membership{Brokers: "b", SessionTimeout: 6 * time.Second}, LivenessMargin: 5 * time.Second},
			want: []string{"LivenessMargin (5s) leaves SessionTimeout (6s) minus it below two HeartbeatIntervals (2s)"},
		},
		{
			name: "liveness check off",
			cfg:  Config{Membership: Membership{Brokers: "b", SessionTimeout: 6 * time.Second}, LivenessMargin: -1},
		},
		{
			name: "default liveness margin with a short session",
			cfg:  Config{Membership: Membership{Brokers: "b", SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond}},
		},
		{
			name: "stop timeout checked against the max poll interval",
			cfg:  Config{Membership: Membership{Brokers: "b", MaxPollInterval: 20 * time.Second}},
			want: []string{"StopTimeout (30s) must be below MaxPollInterval (20s)", "lower StopTimeout or raise MaxPollInterval"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestNilOptionsMeanDefaults(t *testing.T) {
	n, err := New(Config{Membership: Membership{Brokers: "127.0.0.1:1"}}, WithLogger(nil), WithTracerProvider(nil), WithMeterProvider(nil), nil)
	require.NoError(t, err)
	require.NotNil(t, n.log)
	require.NotNil(t, n.tel)
	n.log.Info("discarded") // must not panic
	assert.NoError(t, n.Wait(context.Background()))
}
