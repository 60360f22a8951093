package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one child server (a Kafka node, redis-server, Jaeger, rivven-schema) that the
// launcher owns. It is always stopped by PID, never by name; it leads its own process
// group, so helpers it forks die with it; and Pdeathsig makes the kernel kill it when the
// test binary dies (a panic, a `go test -timeout`), even when no cleanup code runs.
type process struct {
	name    string
	logPath string              // appended to, so a restarted server keeps its earlier log
	redact  func(string) string // applied to log tails, nil for none

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd has been waited for
	logStart int64         // the log's size when cmd started: where this run's output begins
}

// start starts argv with env appended to the current environment, its output going to
// p.logPath.
func (p *process) start(env []string, argv ...string) error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("stack: %s: open log: %w", p.name, err)
	}
	var logStart int64
	if fi, err := logf.Stat(); err == nil {
		logStart = fi.Size()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("stack: %s: start %s: %w", p.name, filepath.Base(argv[0]), err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.logStart = cmd, done, logStart
	p.mu.Unlock()
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	return nil
}

// PID is the child's process id, 0 if it never started.
func (p *process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// exited returns a channel closed when the child exits, nil before it started.
func (p *process) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// running reports whether the child has started and not exited yet.
func (p *process) running() bool {
	select {
	case <-p.exited(): // a nil channel (not started) never fires
		return false
	default:
		return p.exited() != nil
	}
}

// signal sends sig to the child's process group.
func (p *process) signal(sig syscall.Signal) error {
	pid := p.PID()
	if pid == 0 || !p.running() {
		return nil
	}
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stack: %s: signal %v to pid %d: %w", p.name, sig, pid, err)
	}
	return nil
}

// stop sends SIGTERM and waits up to grace for the child to exit, then SIGKILLs it.
func (p *process) stop(grace time.Duration) error {
	if !p.running() {
		return nil
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.exited():
		return nil
	case <-time.After(grace):
	}
	return p.kill()
}

// kill SIGKILLs the child and waits for it to be reaped.
func (p *process) kill() error {
	if !p.running() {
		return nil
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.exited():
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("stack: %s: pid %d did not exit 30s after SIGKILL", p.name, p.PID())
	}
}

// logTail returns the last n bytes of the child's log, from a line start, for errors.
func (p *process) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	if p.redact != nil {
		return p.redact(string(b))
	}
	return string(b)
}

// output is what the child wrote to its log in its current run.
func (p *process) output() string {
	b, err := os.ReadFile(p.logPath)
	p.mu.Lock()
	off := p.logStart
	p.mu.Unlock()
	if err != nil || off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}

// errPortInUse marks a start that lost a port to another process between freePorts and
// the bind; retryPorts then starts again on new ports.
var errPortInUse = errors.New("port already in use")

// failed kills a child whose start failed and returns err, or an error wrapping
// errPortInUse when this run's log says the child could not bind.
func (p *process) failed(err error) error {
	killErr := p.kill()
	if killErr == nil && strings.Contains(strings.ToLower(p.output()), "address already in use") {
		return fmt.Errorf("stack: %s: %w; log tail:\n%s", p.name, errPortInUse, p.logTail(2000))
	}
	return errors.Join(err, killErr)
}

// retryPorts runs start, which picks fresh free ports each time, up to three times while
// it fails with errPortInUse.
func retryPorts(start func() error) error {
	for attempt := 1; ; attempt++ {
		err := start()
		if err == nil || attempt == 3 || !errors.Is(err, errPortInUse) {
			return err
		}
	}
}

// server is a child that needs nothing but free ports (Jaeger, the registry).
type server struct {
	proc  *process
	close func() error
}

// PID is the server's process id.
func (s *server) PID() int { return s.proc.PID() }

// Close stops the server and removes its log. It is idempotent.
func (s *server) Close() error { return s.close() }

// startServer starts a server: launch starts it on fresh ports, its output going to
// logPath in a new temp dir samsa-<name>-*, and ready waits for it; a lost port race
// starts it again. Close stops it with stop.
func startServer(ctx context.Context, name, logName string, launch func(logPath string) (*process, error),
	ready func(context.Context, *process) error, stop func(*process) error) (server, error) {
	logDir, err := os.MkdirTemp("", "samsa-"+name+"-")
	if err != nil {
		return server{}, fmt.Errorf("stack: %s: create log dir: %w", name, err)
	}
	var p *process
	err = retryPorts(func() error {
		var err error
		if p, err = launch(filepath.Join(logDir, logName+".log")); err != nil {
			return err
		}
		if err := ready(ctx, p); err != nil {
			return p.failed(err)
		}
		return nil
	})
	if err != nil {
		return server{}, errors.Join(err, os.RemoveAll(logDir))
	}
	return server{p, sync.OnceValue(func() error { return errors.Join(stop(p), os.RemoveAll(logDir)) })}, nil
}

// poll calls ready every interval until it succeeds, ctx ends, timeout passes or one of
// procs exits; the errors carry the log tail (on a timeout, of procs[0]).
func poll(ctx context.Context, timeout, interval time.Duration, ready func(context.Context) error,
	procs ...*process) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		for _, p := range procs {
			if !p.running() {
				return fmt.Errorf("stack: %s exited before it was ready (%v); log tail:\n%s", p.name, err, p.logTail(6000))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stack: %s not ready after %s (last error: %v): %w; log tail:\n%s",
				procs[0].name, timeout, err, ctx.Err(), procs[0].logTail(4000))
		case <-time.After(interval):
		}
	}
}

// dialable is a poll check that addr accepts a TCP connection.
func dialable(addr string) func(context.Context) error {
	return func(context.Context) error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// freePorts reserves n distinct free TCP ports on 127.0.0.1. The listeners are held until
// all n are chosen, so the ports differ; another process could still take one before the
// server binds it, which is why starts go through retryPorts.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("stack: reserve a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// lastBytes is the end of b, at most n bytes, for error messages.
func lastBytes(b []byte, n int) string {
	return string(b[max(0, len(b)-n):])
}

// dataDir makes dir, or a new temp dir samsa-<prefix>-* (temp true) when dir is "".
func dataDir(dir, prefix string) (_ string, temp bool, err error) {
	if dir == "" {
		dir, err = os.MkdirTemp("", "samsa-"+prefix+"-")
		temp = true
	} else {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return "", false, fmt.Errorf("stack: %s: create data dir: %w", prefix, err)
	}
	return dir, temp, nil
}

// writeFile writes data to path with mode, which it also sets on a file left from an
// earlier run (os.WriteFile keeps an existing file's mode).
func writeFile(path string, data []byte, mode os.FileMode) error {
	err := os.WriteFile(path, data, mode)
	if err == nil {
		err = os.Chmod(path, mode)
	}
	if err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	return nil
}

// CacheDir is where downloaded and built artifacts (Kafka jars, the Jaeger and registry
// binaries) are kept between runs, outside the repository: $SAMSA_CACHE_DIR, else the user
// cache dir (~/.cache/samsa).
func CacheDir() (string, error) {
	if d := os.Getenv("SAMSA_CACHE_DIR"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("stack: no cache dir (set SAMSA_CACHE_DIR): %w", err)
	}
	return filepath.Join(d, "samsa"), nil
}

// cached returns CacheDir()/dir/want, building dir first when want is missing. build
// writes the new dir at dst, a fresh path in the cache (its parent is free scratch
// space), which is renamed into place once build succeeds, so an interrupted build never
// leaves something later runs would take as cached. The build runs holding an flock on
// CacheDir()/<name>.lock, so concurrent test binaries (go test runs packages in
// parallel) wait for one build.
func cached(name, dir, want string, build func(dst string) error) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	dir, want = filepath.Join(cache, dir), filepath.Join(cache, dir, want)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("stack: cache dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("stack: open lock: %w", err)
	}
	defer lock.Close() // which releases the flock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("stack: lock %s: %w", lock.Name(), err)
	}
	if _, err := os.Stat(want); err == nil {
		return want, nil
	}
	// Builds cut short (a killed test binary) leave their dirs; none runs now, under the lock.
	if old, err := filepath.Glob(filepath.Join(cache, name+"-build-*")); err == nil {
		for _, d := range old {
			os.RemoveAll(d)
		}
	}
	tmp, err := os.MkdirTemp(cache, name+"-build-")
	if err != nil {
		return "", fmt.Errorf("stack: %s cache dir: %w", name, err)
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, "out")
	if err := build(dst); err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("stack: %s cache dir: %w", name, err)
	}
	if err := os.Rename(dst, dir); err != nil {
		return "", fmt.Errorf("stack: install %s into the cache: %w", name, err)
	}
	return want, nil
}

// toolsPath locates a file under integration/tools from this source file, so it works
// whatever the working directory (package dir under go test, repo root for the CLI).
func toolsPath(elem ...string) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", fmt.Errorf("stack: cannot locate integration/tools (source path %q; built with -trimpath?): "+
			"run from a samsa checkout", file)
	}
	p := filepath.Join(append([]string{filepath.Dir(file), "..", "tools"}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("stack: %w: run from a samsa checkout", err)
	}
	return p, nil
}
