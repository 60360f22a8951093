package kconf

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckOverrides(t *testing.T) {
	errs := CheckOverrides(map[string]any{
		"enable.auto.commit": false,
		"linger.ms":          5,
		"bad":                []string{"x"},
	}, Owned{"enable.auto.commit": "offsets are committed after outputs are acknowledged"}, "Config.ConsumerOverrides")
	require.Len(t, errs, 2)
	assert.ErrorContains(t, errs[0], `Config.ConsumerOverrides["bad"]: value of type []string`)
	assert.ErrorContains(t, errs[1], `Config.ConsumerOverrides["enable.auto.commit"]: the framework owns this setting (offsets are committed after outputs are acknowledged)`)
}

func TestBuildOwnedWins(t *testing.T) {
	cm := Build(Map{"a": 1, "b": 1}, Map{"b": 2, "c": 2}, Map{"c": 3})
	assert.Equal(t, 1, (*cm)["a"])
	assert.Equal(t, 2, (*cm)["b"])
	assert.Equal(t, 3, (*cm)["c"])
}

func TestRedacted(t *testing.T) {
	s := Redacted(map[string]any{"sasl.password": "CANARY-1", "sasl.username": "u", "ssl.key.password": "CANARY-2", "sasl.oauthbearer.client.secret": "CANARY-3"})
	assert.NotContains(t, s, "CANARY")
	assert.Contains(t, s, "sasl.username=u")
}
