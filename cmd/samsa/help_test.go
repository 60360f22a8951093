package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
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
