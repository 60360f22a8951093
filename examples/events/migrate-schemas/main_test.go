package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec/registry"
	"github.com/samsa-go/samsa/integration/stack"
)

func TestMain(m *testing.M) { os.Exit(stack.RunTests(m)) }

const v1 = `{"type":"record","name":"shipment","fields":[{"name":"order_id","type":"string"},{"name":"carrier","type":"string"}]}`

// TestMigrateSchemasOnRealRegistry: a directory is registered; a compatible change (a new
// field with a default) is registered as the next version; a change that breaks
// BACKWARD compatibility (a new field without a default) is refused with the subject
// and the rule, the other files of the directory are still registered, and the command
// fails.
func TestMigrateSchemasOnRealRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: this test runs against a real schema registry")
	}
	url := stack.SchemaRegistryURL(t)
	client, err := registry.NewClient(registry.Config{URL: url})
	require.NoError(t, err)
	defer client.Close()
	subject := stack.UniqueName("shipment")
	other := stack.UniqueName("other")
	dir := t.TempDir()
	write := func(name, text string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
	}
	write(subject+".avsc", v1)
	write("README.txt", "not a schema: ignored")

	var out bytes.Buffer
	require.NoError(t, run([]string{"-dir", dir, "-registry", url}, &out), out.String())
	assert.Contains(t, out.String(), `registered `+subject+`.avsc: subject "`+subject+`", schema ID`)
	id1, _, err := client.Latest(subject)
	require.NoError(t, err)
	require.NoError(t, client.SetCompatibility(subject, "BACKWARD"))

	write(subject+".avsc", strings.Replace(v1, `"string"}]}`, `"string"},{"name":"tracking","type":"string","default":""}]}`, 1))
	out.Reset()
	require.NoError(t, run([]string{"-dir", dir, "-registry", url, "-check"}, &out), out.String())
	require.NoError(t, run([]string{"-dir", dir, "-registry", url}, &out), out.String())
	id2, _, err := client.Latest(subject)
	require.NoError(t, err)
	assert.NotEqual(t, id1, id2, "the compatible change is the next version")

	write(subject+".avsc", strings.Replace(v1, `"string"}]}`, `"string"},{"name":"weight_grams","type":"long"}]}`, 1))
	write(other+".avsc", v1)
	for _, check := range []bool{true, false} {
		out.Reset()
		args := []string{"-dir", dir, "-registry", url}
		if check {
			args = append(args, "-check")
		}
		err = run(args, &out)
		require.Error(t, err, "check=%v", check)
		assert.Contains(t, err.Error(), "1 of 2 schemas not")
		assert.Contains(t, out.String(), `INCOMPATIBLE `+subject+`.avsc: subject "`+subject+`" refuses it under compatibility BACKWARD`, "check=%v", check)
	}
	t.Logf("migrate-schemas output:\n%s", &out)
	assert.Contains(t, out.String(), `registered `+other+`.avsc`, "the other file is still registered")
	id3, _, err := client.Latest(subject)
	require.NoError(t, err)
	assert.Equal(t, id2, id3, "the incompatible schema was not registered")
}

func TestMigrateSchemasUsage(t *testing.T) {
	var out bytes.Buffer
	assert.ErrorContains(t, run(nil, &out), "-dir is required")
	assert.ErrorContains(t, run([]string{"-dir", filepath.Join(t.TempDir(), "nope")}, &out), "is not a directory")
	assert.ErrorContains(t, run([]string{"-dir", t.TempDir(), "-registry", "mock://m"}, &out), "no schema files")
	assert.ErrorContains(t, run([]string{"-dir", t.TempDir(), "-registry", "ftp://x"}, &out), "not an http(s) URL")
}
