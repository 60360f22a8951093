package stack

import (
	"context"
	"io"
	"net/http"
	"os"
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
	if testing.Short() {
		t.Skip("-short: needs the rivven-schema build")
	}
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

	pid := r.PID()
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "Close must be idempotent")
	assertGone(t, pid)
}

// TestRegistryBinaryCached: rivven-schema is built once (`make registry` runs this test to
// do it ahead of time); a second call finds the binary and does not rebuild it.
func TestRegistryBinaryCached(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building rivven-schema needs cargo and minutes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), registryBuildTimeout+time.Minute)
	defer cancel()
	bin, err := RegistryBinary(ctx)
	require.NoError(t, err)
	st1, err := os.Stat(bin)
	require.NoError(t, err)
	require.NotZero(t, st1.Mode()&0o111, "%s is not executable", bin)
	bin2, err := RegistryBinary(ctx)
	require.NoError(t, err)
	st2, err := os.Stat(bin2)
	require.NoError(t, err)
	assert.Equal(t, st1.ModTime(), st2.ModTime(), "rebuilt")
}
