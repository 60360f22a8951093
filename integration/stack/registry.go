package stack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The test schema registry is rivven-schema (Apache-2.0), which speaks Confluent's REST
// API: Confluent's own registry and Apicurio are not installable from the package
// registries the test machines reach, and Karapace is not packaged there. It is built
// once with cargo from crates.io into CacheDir.
const registryVersion = "0.0.22"

const (
	registryStartAttempts = 3
	registryReadyTimeout  = 30 * time.Second
	registryStopGrace     = 5 * time.Second
	registryBuildTimeout  = 30 * time.Minute
)

var errRegistryPortInUse = errors.New("port already in use")

// RegistryBinary returns the path of the rivven-schema binary, building it with `cargo
// install --locked` into CacheDir() on first use (about 5 minutes on two cores).
// Concurrent callers, including other test binaries, wait for one build.
func RegistryBinary(ctx context.Context) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "rivven-schema-"+registryVersion)
	bin := filepath.Join(dir, "bin", "rivven-schema")
	err = withFileLock(filepath.Join(cache, "rivven-schema.lock"), func() error {
		if _, err := os.Stat(bin); err == nil {
			return nil
		}
		return buildRegistry(ctx, cache, dir)
	})
	if err != nil {
		return "", err
	}
	return bin, nil
}

// cargoPath finds cargo in PATH or where rustup installs it.
func cargoPath() (string, error) {
	if p, err := exec.LookPath("cargo"); err == nil {
		return p, nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".cargo", "bin", "cargo")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("stack: building the test schema registry (rivven-schema %s) needs cargo: install Rust (rustup) or set %s to a running Confluent-API registry", registryVersion, EnvSchemaRegistryURL)
}

func buildRegistry(ctx context.Context, cache, dir string) error {
	cargo, err := cargoPath()
	if err != nil {
		return err
	}
	// Install into a fresh root next to the final one and rename it into place, so an
	// interrupted build never leaves a binary later runs would take as complete.
	tmp, err := os.MkdirTemp(cache, "rivven-schema-build-")
	if err != nil {
		return fmt.Errorf("stack: registry cache dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(ctx, registryBuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cargo, "install", "rivven-schema", "--version", registryVersion, "--locked",
		"--root", filepath.Join(tmp, "root"))
	cmd.Env = append(os.Environ(), "CARGO_TARGET_DIR="+filepath.Join(tmp, "target"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("stack: build the test schema registry (cargo install rivven-schema %s): %w\n%s", registryVersion, err, lastBytes(out, 4000))
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("stack: registry cache dir: %w", err)
	}
	if err := os.Rename(filepath.Join(tmp, "root"), dir); err != nil {
		return fmt.Errorf("stack: install the registry binary: %w", err)
	}
	return nil
}

// RegistryOptions configures StartRegistry. It has no fields yet.
type RegistryOptions struct{}

// Registry is a rivven-schema child process serving Confluent's schema-registry REST API
// on a free 127.0.0.1 port. Its schemas are kept in memory: a restart loses them, so
// outages are simulated with Pause and Resume.
type Registry struct {
	url    string
	proc   *process
	logDir string

	mu     sync.Mutex
	closed bool
}

// StartRegistry builds rivven-schema if needed (see RegistryBinary), starts it and waits
// until its REST API answers.
func StartRegistry(ctx context.Context, opts RegistryOptions) (*Registry, error) {
	bin, err := RegistryBinary(ctx)
	if err != nil {
		return nil, err
	}
	logDir, err := os.MkdirTemp("", "samsa-registry-")
	if err != nil {
		return nil, fmt.Errorf("stack: registry: create log dir: %w", err)
	}
	for attempt := 1; ; attempt++ {
		r, err := startRegistry(ctx, bin, logDir)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, errRegistryPortInUse) || attempt == registryStartAttempts {
			return nil, errors.Join(err, os.RemoveAll(logDir))
		}
	}
}

func startRegistry(ctx context.Context, bin, logDir string) (*Registry, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, "rivven-schema.log")
	var logStart int64
	if fi, err := os.Stat(logPath); err == nil {
		logStart = fi.Size()
	}
	p, err := startProcess("rivven-schema", logPath, nil, bin, "serve", "--host", "127.0.0.1", "--port", strconv.Itoa(ports[0]), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	r := &Registry{url: "http://" + hostPort(ports[0]), proc: p, logDir: logDir}
	if err := r.waitReady(ctx); err != nil {
		killErr := p.kill()
		if strings.Contains(strings.ToLower(logSince(logPath, logStart)), "address already in use") {
			return nil, fmt.Errorf("stack: rivven-schema: %w; log tail:\n%s", errRegistryPortInUse, p.logTail(2000))
		}
		return nil, errors.Join(err, killErr)
	}
	return r, nil
}

// waitReady waits for GET /subjects to answer 200.
func (r *Registry) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, registryReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var lastErr error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/subjects", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /subjects: HTTP %s", resp.Status)
		}
		lastErr = err
		select {
		case <-r.proc.exited():
			return fmt.Errorf("stack: rivven-schema exited before its API answered; log tail:\n%s", r.proc.logTail(4000))
		case <-ctx.Done():
			return fmt.Errorf("stack: rivven-schema at %s not ready (last error: %v): %w; log tail:\n%s", r.url, lastErr, ctx.Err(), r.proc.logTail(4000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// URL is the registry's base URL, "http://127.0.0.1:port".
func (r *Registry) URL() string { return r.url }

// PID is the rivven-schema process id.
func (r *Registry) PID() int { return r.proc.PID() }

// Pause stops the registry process (SIGSTOP) without losing its in-memory schemas: new
// connections are accepted by the kernel but never answered, as with a hung server. It
// returns once every thread of the process is stopped: a signal is delivered
// asynchronously, and a thread still running could answer one more request.
func (r *Registry) Pause() error {
	if err := r.proc.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for !allThreadsStopped(r.proc.PID()) {
		if time.Now().After(deadline) {
			return fmt.Errorf("stack: rivven-schema (pid %d) not stopped 5s after SIGSTOP", r.proc.PID())
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// allThreadsStopped reports whether every thread of pid is in state T (stopped), from
// /proc/<pid>/task/*/stat.
func allThreadsStopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			return false
		}
		// "pid (comm) S ...": the state follows the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Resume continues a paused registry (SIGCONT).
func (r *Registry) Resume() error { return r.proc.signal(syscall.SIGCONT) }

// Close stops the registry and removes its log. It is idempotent.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.proc.signal(syscall.SIGCONT) // a paused process would not act on SIGTERM
	return errors.Join(r.proc.stop(registryStopGrace), os.RemoveAll(r.logDir))
}
