package stack

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The test schema registry is rivven-schema (Apache-2.0), which speaks Confluent's REST
// API: Confluent's own registry and Apicurio are not installable from the package
// registries the test machines reach, and Karapace is not packaged there. It is built
// once with cargo from crates.io into CacheDir.
const (
	registryVersion      = "0.0.22"
	registryBuildTimeout = 30 * time.Minute
)

// RegistryBinary returns the path of the rivven-schema binary, building it with `cargo
// install --locked` into CacheDir()/rivven-schema-<version> on first use (about 5 minutes
// on two cores). Concurrent callers, including other test binaries, wait for one build.
func RegistryBinary(ctx context.Context) (string, error) {
	return cached("rivven-schema", "rivven-schema-"+registryVersion, "bin/rivven-schema", func(dst string) error {
		cargo, err := exec.LookPath("cargo")
		if home, herr := os.UserHomeDir(); err != nil && herr == nil {
			cargo = filepath.Join(home, ".cargo", "bin", "cargo") // where rustup installs it
			_, err = os.Stat(cargo)
		}
		if err != nil {
			return fmt.Errorf("stack: building the test schema registry (rivven-schema %s) needs cargo: install Rust (rustup) or set %s to a running Confluent-API registry", registryVersion, EnvSchemaRegistryURL)
		}
		ctx, cancel := context.WithTimeout(ctx, registryBuildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, cargo, "install", "rivven-schema", "--version", registryVersion,
			"--locked", "--root", dst)
		cmd.Env = append(os.Environ(), "CARGO_TARGET_DIR="+filepath.Join(filepath.Dir(dst), "target"))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("stack: build the test schema registry (cargo install rivven-schema %s): %w\n%s", registryVersion, err, lastBytes(out, 4000))
		}
		return nil
	})
}

// RegistryOptions configures StartRegistry. It has no fields yet.
type RegistryOptions struct{}

// Registry is a rivven-schema child process serving Confluent's schema-registry REST API
// on a free 127.0.0.1 port. Its schemas are kept in memory: a restart loses them, so
// outages are simulated with Pause and Resume. Close stops it and removes its log.
type Registry struct {
	server
	url string
}

// StartRegistry builds rivven-schema if needed (see RegistryBinary), starts it and waits
// until its REST API answers GET /subjects.
func StartRegistry(ctx context.Context, opts RegistryOptions) (*Registry, error) {
	bin, err := RegistryBinary(ctx)
	if err != nil {
		return nil, err
	}
	r := &Registry{}
	client := &http.Client{Timeout: 2 * time.Second}
	r.server, err = startServer(ctx, "registry", "rivven-schema", func(logPath string) (*process, error) {
		ports, err := freePorts(1)
		if err != nil {
			return nil, err
		}
		r.url = "http://" + hostPort(ports[0])
		p := &process{name: "rivven-schema", logPath: logPath}
		return p, p.start(nil, bin, "serve", "--host", "127.0.0.1", "--port", strconv.Itoa(ports[0]), "--log-level", "warn")
	}, func(ctx context.Context, p *process) error {
		return poll(ctx, 30*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/subjects", nil)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET /subjects: HTTP %s", resp.Status)
			}
			return nil
		}, p)
	}, func(p *process) error {
		p.signal(syscall.SIGCONT) // a paused process would not act on SIGTERM
		return p.stop(5 * time.Second)
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// URL is the registry's base URL, "http://127.0.0.1:port".
func (r *Registry) URL() string { return r.url }

// Pause stops the registry process (SIGSTOP) without losing its in-memory schemas: new
// connections are accepted by the kernel but never answered, as with a hung server. It
// returns once every thread of the process is stopped (state T in
// /proc/<pid>/task/*/stat): a signal is delivered asynchronously, and a thread still
// running could answer one more request.
func (r *Registry) Pause() error {
	if err := r.proc.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	stopped := func() bool {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", r.proc.PID()))
		for _, t := range tasks {
			b, rerr := os.ReadFile(t)
			// "pid (comm) S ...": the state follows the last ')'.
			i := strings.LastIndexByte(string(b), ')')
			if rerr != nil || i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
				return false
			}
		}
		return err == nil && len(tasks) > 0
	}
	for deadline := time.Now().Add(5 * time.Second); !stopped(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("stack: rivven-schema (pid %d) not stopped 5s after SIGSTOP", r.proc.PID())
		}
	}
	return nil
}

// Resume continues a paused registry (SIGCONT).
func (r *Registry) Resume() error { return r.proc.signal(syscall.SIGCONT) }
