package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHelp: every command's -h says what it does and what it will not do, exits 0, and
// a bad invocation is one line with exit code 2. No broker needed.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"status", "-h"}, {"reset", "-h"}, {"replay", "-h"}, {"replay", "plan", "-h"}, {"table", "-h"}, {"table", "compare", "-h"}, {"dlq", "-h"}, {"dlq", "list", "-h"}, {"dlq", "redrive", "-h"}} {
		var out, errb strings.Builder
		code := run(context.Background(), args, &out, &errb)
		help := out.String() + errb.String()
		assert.Equal(t, 0, code, "%v", args)
		assert.Contains(t, help, "Usage: samsa", "%v", args)
		assert.Regexp(t, `(?i)will not|it does not|not guard`, help, "%v says what it will not do", args)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"status", "-brokers", "b:1"}, "exactly one of -group and -distributed"},
		{[]string{"status", "-brokers", "b:1", "-group", "g", "-o", "yaml"}, `-o "yaml": want text or json`},
		{[]string{"reset", "-brokers", "b:1", "-group", "g", "-topic", "t:x", "-to-earliest"}, `partition "x" is not a number`},
		{[]string{"reset", "-brokers", "b:1", "-group", "g", "-topic", "t", "-offsets", "0=a"}, `-offsets "0=a"`},
		{[]string{"dlq", "list", "-brokers", "b:1", "-topic", "d", "-stage", "lunch"}, `-stage "lunch"`},
		{[]string{"dlq", "purge"}, "want dlq list or dlq redrive"},
		{[]string{"table", "compare", "-redis", "r:1", "-a", "x"}, "-redis, -a and -b are required"},
		{[]string{"status", "-group", "g", "-brokers", "b:1", "-X", "novalue"}, `-X "novalue": want key=value`},
	} {
		var out, errb strings.Builder
		code := run(context.Background(), c.args, &out, &errb)
		assert.Equal(t, 2, code, "%v", c.args)
		assert.Equal(t, 1, strings.Count(errb.String(), "\n"), "%v: one line: %q", c.args, errb.String())
		assert.Contains(t, errb.String(), c.want, "%v", c.args)
	}
}

// TestSettings: where the brokers and librdkafka settings come from: -brokers, else
// bootstrap.servers from -config or -X, else $KAFKA_BROKERS; -X beats -config.
func TestSettings(t *testing.T) {
	props := filepath.Join(t.TempDir(), "client.properties")
	require.NoError(t, os.WriteFile(props, []byte("# comment\n! also a comment\nbootstrap.servers = file:1\nsecurity.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n\n"), 0o600))
	t.Setenv("KAFKA_BROKERS", "env:1")
	for _, c := range []struct {
		args    []string
		brokers string
		props   map[string]any
	}{
		{nil, "env:1", map[string]any{}},
		{[]string{"-config", props}, "file:1", map[string]any{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}},
		{[]string{"-config", props, "-brokers", "flag:1", "-X", "sasl.mechanism=SCRAM-SHA-512"}, "flag:1", map[string]any{"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}},
		{[]string{"-X", "bootstrap.servers=x:1"}, "x:1", map[string]any{}},
	} {
		fs, cn := newFlags(&env{stdout: io.Discard, stderr: io.Discard}, "t", "", "")
		require.NoError(t, cn.parse(fs, c.args))
		brokers, m, err := cn.settings()
		require.NoError(t, err)
		assert.Equal(t, c.brokers, brokers, "%v", c.args)
		assert.Equal(t, c.props, map[string]any(m), "%v", c.args)
	}
	bad := filepath.Join(t.TempDir(), "bad.properties")
	require.NoError(t, os.WriteFile(bad, []byte("security.protocol SSL\n"), 0o600))
	var out, errb strings.Builder
	code := run(context.Background(), []string{"status", "-group", "g", "-config", bad}, &out, &errb)
	assert.Equal(t, 2, code)
	assert.Contains(t, errb.String(), "line 1: want key=value")
	assert.Equal(t, 1, strings.Count(errb.String(), "\n"))
}

// The SASL password given with -X or in a properties file never appears in what the
// command prints, whether it fails to connect or refuses bad input.
func TestCanaryPasswordNotPrinted(t *testing.T) {
	const canary = "canary-pw-51c0de"
	props := filepath.Join(t.TempDir(), "client.properties")
	require.NoError(t, os.WriteFile(props, []byte("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=svc\nsasl.password="+canary+"\n"), 0o600))
	for _, args := range [][]string{
		{"status", "-group", "g", "-brokers", "127.0.0.1:1", "-timeout", "2s", "-config", props},
		{"status", "-group", "g", "-brokers", "127.0.0.1:1", "-timeout", "2s", "-X", "sasl.password=" + canary, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN", "-X", "sasl.username=svc"},
		{"reset", "-group", "g", "-topic", "t", "-to-datetime", "yesterday", "-brokers", "127.0.0.1:1", "-config", props},
		{"dlq", "list", "-topic", "d", "-brokers", "127.0.0.1:1", "-timeout", "2s", "-o", "json", "-config", props},
	} {
		var out, errb strings.Builder
		code := run(context.Background(), args, &out, &errb)
		assert.NotZero(t, code, "%v", args)
		assert.NotContains(t, out.String()+errb.String(), canary, "%v printed the password", args)
	}
}
