package harness

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Dir is integration/, wherever the test binary runs.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// GoBuild compiles a package under integration/ into dir, with the build tags given. It
// may run off the test goroutine (beside a broker's start): the caller makes dir there
// with t.TempDir, which may fail the test.
func GoBuild(dir, pkg string, tags ...string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the tests build their workers with the go tool: %w", err)
	}
	bin := filepath.Join(dir, filepath.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.CommandContext(ctx, goBin, append(args, pkg)...)
	cmd.Dir = Dir()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s %s: %w\n%s", strings.Join(tags, ","), pkg, err, out)
	}
	return bin, nil
}

// StartBuilt runs build on its own goroutine while start runs on the test's, and fails
// tb if either fails: a fault test builds its workers while its components start.
func StartBuilt(tb testing.TB, build func() error, start func()) {
	tb.Helper()
	built := make(chan error, 1)
	go func() { built <- build() }()
	start()
	require.NoError(tb, <-built)
}

// EnvBin is env(1), through which the tests start a chaos worker to set its fail-point
// ($SAMSA_FAILPOINT) with the same PID.
func EnvBin(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("env")
	require.NoError(tb, err, "the tests start the worker through env(1) to set its fail-point")
	return bin
}

// WorkerProc is one worker OS process.
type WorkerProc struct {
	cmd   *exec.Cmd
	done  chan struct{}
	State *os.ProcessState // valid after Done
}

// StartWorker starts bin with args, its output appended to logPath. The kernel kills it
// if the test binary dies; it is SIGKILLed by PID when tb ends if it still runs.
func StartWorker(tb testing.TB, bin, logPath string, args ...string) *WorkerProc {
	tb.Helper()
	return StartWorkerThen(tb, bin, logPath, nil, args...)
}

// StartWorkerThen is StartWorker that calls exited, when not nil, as soon as the process
// has exited (before Done closes).
func StartWorkerThen(tb testing.TB, bin, logPath string, exited func(), args ...string) *WorkerProc {
	tb.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(tb, err)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// The kernel kills the worker if the test binary dies without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(tb, cmd.Start())
	w := &WorkerProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		if exited != nil {
			exited()
		}
		f.Close()
		w.State = cmd.ProcessState
		close(w.done)
	}()
	tb.Cleanup(func() {
		if _, ok := w.Signal(syscall.SIGKILL, 10*time.Second); !ok {
			tb.Errorf("%s (pid %d) did not die on SIGKILL", filepath.Base(bin), w.Pid())
		}
	})
	return w
}

// Pid is the worker's process id.
func (w *WorkerProc) Pid() int { return w.cmd.Process.Pid }

// Done is closed when the worker has exited.
func (w *WorkerProc) Done() <-chan struct{} { return w.done }

// Running reports whether the worker has not exited yet.
func (w *WorkerProc) Running() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// Alive is nil while the worker runs; once it has exited, an error saying how.
func (w *WorkerProc) Alive() error {
	if w.Running() {
		return nil
	}
	return fmt.Errorf("worker %d ended by itself (%s)", w.Pid(), ExitDesc(w))
}

// Alive is the first of workers' Alive errors (nil while all run).
func Alive(workers ...*WorkerProc) error {
	for _, w := range workers {
		if err := w.Alive(); err != nil {
			return err
		}
	}
	return nil
}

// Signal sends sig to the worker (by PID) and waits up to timeout for it to exit. It
// returns the exit code (-1 when killed by a signal) and whether it exited in time.
func (w *WorkerProc) Signal(sig syscall.Signal, timeout time.Duration) (int, bool) {
	w.Kill(sig)
	return w.Wait(timeout)
}

// Kill sends sig to the worker (by PID) if it still runs.
func (w *WorkerProc) Kill(sig syscall.Signal) {
	if w.Running() {
		syscall.Kill(w.Pid(), sig)
	}
}

// Wait waits up to timeout for the worker to exit. It returns the exit code (-1 when
// killed by a signal) and whether it exited in time.
func (w *WorkerProc) Wait(timeout time.Duration) (int, bool) {
	select {
	case <-w.done:
		return w.State.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// ExitDesc describes how a worker ended.
func ExitDesc(w *WorkerProc) string {
	if w.Running() {
		return "running"
	}
	if ws, ok := w.State.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
	}
	return "exit " + strconv.Itoa(w.State.ExitCode())
}

// KilledBy reports whether the (exited) worker was killed by sig.
func KilledBy(w *WorkerProc, sig syscall.Signal) bool {
	ws, ok := w.State.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// TailFile returns the last n bytes of the file at path.
func TailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// CountInFile counts the occurrences of substr in the file at path.
func CountInFile(path, substr string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), substr)
}

// LogOnFailure logs the tail of a worker log when tb fails, and keeps the whole log in
// $SAMSA_FAULT_LOGS (default: the system temp dir) for the post-mortem; with
// SAMSA_KEEP_LOGS=1 it keeps it when tb passes too.
func LogOnFailure(tb testing.TB, name, path string) {
	tb.Cleanup(func() {
		if !tb.Failed() && os.Getenv("SAMSA_KEEP_LOGS") != "1" {
			return
		}
		if tb.Failed() {
			tb.Logf("--- %s tail:\n%s", name, TailFile(path, 6000))
		}
		dir := os.Getenv("SAMSA_FAULT_LOGS")
		if dir == "" {
			dir = os.TempDir()
		}
		if data, err := os.ReadFile(path); err == nil {
			keep := filepath.Join(dir, fmt.Sprintf("%s-%s-%d.log", strings.ReplaceAll(tb.Name(), "/", "_"), strings.ReplaceAll(name, " ", "_"), time.Now().UnixNano()))
			if err := os.WriteFile(keep, data, 0o644); err == nil {
				tb.Logf("--- whole %s log kept in %s", name, keep)
			}
		}
	})
}

// FileLog is a log file under the test's temp dir.
type FileLog struct {
	Path string
}

// NewFileLog returns a logger writing to a file under tb.TempDir(); when tb fails, the
// file's tail is logged.
func NewFileLog(tb testing.TB, name string, level slog.Level) (*slog.Logger, *FileLog) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name+".log")
	f, err := os.Create(path)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		f.Close()
		if tb.Failed() {
			tb.Logf("--- %s log tail:\n%s", name, TailFile(path, 4000))
		}
	})
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: level})), &FileLog{Path: path}
}

// Count counts the log's lines containing substr (rebalances, say).
func (l *FileLog) Count(substr string) int {
	b, _ := os.ReadFile(l.Path)
	return bytes.Count(b, []byte(substr))
}

// Build is GoBuild into tb's temp dir, failing tb when the build fails.
func Build(tb testing.TB, pkg string, tags ...string) string {
	tb.Helper()
	bin, err := GoBuild(tb.TempDir(), pkg, tags...)
	require.NoError(tb, err)
	return bin
}

// WorkerLog returns a fresh log path under tb's temp dir for the worker called name, and
// logs it on failure (LogOnFailure).
func WorkerLog(tb testing.TB, name string) string {
	path := filepath.Join(tb.TempDir(), strings.ReplaceAll(name, " ", "-")+".log")
	LogOnFailure(tb, name, path)
	return path
}
