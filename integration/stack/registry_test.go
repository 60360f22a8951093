package stack

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRegistryLauncher starts rivven-schema, registers a schema over the Confluent REST
// API, pauses the registry (requests then time out), resumes it (the schema is still
// there), and checks Close stops the process.
func TestRegistryLauncher(t *testing.T) {
	needs(t, "the rivven-schema build")
	// The first run builds rivven-schema with cargo (about 5 minutes on 2 cores).
	ctx, cancel := context.WithTimeout(context.Background(), registryBuildTimeout+time.Minute)
	defer cancel()
	start := time.Now()
	r, err := StartRegistry(ctx, RegistryOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, r.Close()) })
	t.Logf("schema registry ready in %s at %s", time.Since(start).Round(time.Millisecond), r.URL())

	client := &http.Client{Timeout: 2 * time.Second}
	post := func() (int, string, error) {
		body := `{"schema":"{\"type\":\"record\",\"name\":\"t\",\"fields\":[{\"name\":\"a\",\"type\":\"string\"}]}"}`
		resp, err := client.Post(r.URL()+"/subjects/launcher-value/versions", "application/vnd.schemaregistry.v1+json", strings.NewReader(body))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	code, body, err := post()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, `"id"`)

	require.NoError(t, r.Pause())
	_, _, err = post()
	require.Error(t, err, "a paused registry does not answer")
	require.NoError(t, r.Resume())
	code, body2, err := post()
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, body, body2, "same schema, same ID: nothing lost while paused")

	requireClosed(t, r.Close, r.PID())
}

// TestRegistryBinaryCached: rivven-schema is built once (`make registry` runs this test to
// do it ahead of time); a second call finds the binary and does not rebuild it.
func TestRegistryBinaryCached(t *testing.T) {
	needs(t, "cargo and minutes to build rivven-schema")
	bin := requireBuiltOnce(t, registryBuildTimeout+time.Minute, RegistryBinary, func(bin string) string { return bin })
	requireExecutable(t, bin)
}

// TestRegistryBuildWithFakeCargo checks the install steps without the 5-minute build: a
// stand-in cargo that records its arguments and writes <root>/bin/rivven-schema. A
// failing build leaves nothing a later run would take for a finished binary.
func TestRegistryBuildWithFakeCargo(t *testing.T) {
	bin := t.TempDir()
	args := filepath.Join(t.TempDir(), "args")
	fake := `#!/bin/sh
echo "$@" > ` + args + `
[ -n "$FAIL_BUILD" ] && { echo "error: could not compile" >&2; exit 101; }
root=""; while [ $# -gt 0 ]; do [ "$1" = "--root" ] && root="$2"; shift; done
mkdir -p "$root/bin" && printf '#!/bin/sh\n' > "$root/bin/rivven-schema" && chmod +x "$root/bin/rivven-schema"
`
	require.NoError(t, os.WriteFile(filepath.Join(bin, "cargo"), []byte(fake), 0o755))
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	cache := t.TempDir()
	t.Setenv("SAMSA_CACHE_DIR", cache)
	ctx := context.Background()

	t.Setenv("FAIL_BUILD", "1")
	_, err := RegistryBinary(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "could not compile")
	assert.NoFileExists(t, filepath.Join(cache, "rivven-schema-"+registryVersion, "bin", "rivven-schema"))

	t.Setenv("FAIL_BUILD", "")
	path, err := RegistryBinary(ctx)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(cache, "rivven-schema-"+registryVersion, "bin", "rivven-schema"), path)
	b, err := os.ReadFile(args)
	require.NoError(t, err)
	assert.Contains(t, string(b), "install rivven-schema --version "+registryVersion+" --locked --root ")
	entries, err := os.ReadDir(cache)
	require.NoError(t, err)
	for _, e := range entries {
		assert.NotContains(t, e.Name(), "build", "temporary build dirs are removed")
	}
}
