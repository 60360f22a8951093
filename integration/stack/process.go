package stack

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// process is one child server (a Kafka node, redis-server, Jaeger) that the launcher owns.
// It is always stopped by PID, never by name. Pdeathsig makes the kernel kill the child when
// the test binary dies (a panic, a `go test -timeout`), so no server outlives its test even
// when no cleanup code runs.
type process struct {
	name    string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	err  error         // the Wait error, valid after done
}

// startProcess starts argv with env appended to the current environment, its output going
// to logPath (appended, so a restarted node keeps its earlier log).
func startProcess(name, logPath string, env []string, argv ...string) (*process, error) {
	p := &process{name: name, logPath: logPath}
	if err := p.start(env, argv...); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *process) start(env []string, argv ...string) error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("stack: %s: open log: %w", p.name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("stack: %s: start %s: %w", p.name, filepath.Base(argv[0]), err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.err = cmd, done, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
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

// running reports whether the child has not exited yet.
func (p *process) running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// exited returns a channel closed when the child exits.
func (p *process) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// signal sends sig to the child's process group (the child is its group leader, so helper
// processes a server forks die with it).
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

// logTail returns the last n bytes of the child's log, for error messages.
func (p *process) logTail(n int) string {
	return fileTail(p.logPath, n)
}

func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// freePorts reserves n distinct free TCP ports on 127.0.0.1. The listeners are held until
// all n are chosen, so the ports differ; another process could still take one before the
// server binds it, which is why starts are retried by callers that can.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("stack: reserve a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitTCP waits until addr accepts a TCP connection, the process exits, or timeout passes.
func waitTCP(p *process, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if !p.running() {
			return fmt.Errorf("stack: %s exited before listening on %s; log tail:\n%s", p.name, addr, p.logTail(4000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stack: %s not listening on %s after %s; log tail:\n%s", p.name, addr, timeout, p.logTail(4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// CacheDir is where downloaded and built artifacts (Kafka jars, the Jaeger binary) are
// kept between runs, outside the repository: $SAMSA_CACHE_DIR, else the user cache dir
// (~/.cache/samsa).
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

// withFileLock runs fn holding an exclusive flock on path, so concurrent test binaries
// (go test runs packages in parallel) do not download or build the same artifact at once.
func withFileLock(path string, fn func() error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("stack: lock dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("stack: open lock %s: %w", path, err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("stack: lock %s: %w", path, err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}
