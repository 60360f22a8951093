package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The child process protocol of the throughput and mem scenarios: a trial runs in this
// binary re-executed (goka: gokabench), so that its CPU and peak RSS are its own, not
// the harness's (admin client, probes, preload producer, output reader). A child writes
// lines to stdout: "first <unix ns>" when user code first sees a record, "mem <mallocs>
// <bytes allocated> <GCs> [<Go peak>]" just before it exits, and "result <JSON>" with a
// scenario's figures. It runs until SIGTERM (or its own end), shuts down (committing what
// it acknowledged) and exits 0, or non-zero with the error on stderr.

// childSpec is one trial of an in-binary contestant, passed as JSON in -child.
type childSpec struct {
	Contestant     string
	Brokers        string
	Group          string
	In, Out        string
	Batch          int
	BatchWait      time.Duration
	CommitInterval time.Duration
	Consumer       map[string]string // librdkafka properties, parsed as the -consumer flag is
	Producer       map[string]string
	Codec          string
	Buffer         int64  // samsa's MaxBufferedBytes (0: its default)
	CPUProfile     string // written from start until SIGTERM
	BlockProfile   string // PREFIX.block and PREFIX.mutex, every event from start until SIGTERM
	MemProfile     string // PREFIX.before at start, PREFIX.after at SIGTERM
}

func stringMap(m map[string]any) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = fmt.Sprint(v)
	}
	return out
}

func anyMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = parseValue(v)
	}
	return out
}

// throughputChild runs one trial's contestant in this process (the throughput scenario's
// -child mode) and returns the exit code.
func throughputChild(specJSON string) int {
	var s childSpec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fmt.Fprintln(os.Stderr, "bench child: -child:", err)
		return 2
	}
	if !slices.Contains(contestants, s.Contestant) || s.Contestant == cGoka {
		fmt.Fprintf(os.Stderr, "bench child: %q does not run in the harness binary\n", s.Contestant)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	r := run{
		brokers: s.Brokers, group: s.Group, in: s.In, out: s.Out,
		batch: s.Batch, batchWait: s.BatchWait, commitInterval: s.CommitInterval,
		consumer: anyMap(s.Consumer), producer: anyMap(s.Producer), codec: s.Codec, buffer: s.Buffer,
		first: &firstMark{notify: func(t time.Time) { fmt.Printf("first %d\n", t.UnixNano()) }},
	}
	stopProfiles, err := startProfiles(s)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 1
	}
	goPeak := sampleGoPeak(ctx)
	run := startRun(ctx, func(ctx context.Context) error { return runContestant(ctx, s.Contestant, r) })
	select {
	case <-ctx.Done(): // the harness saw everything committed: profiles end before the shutdown
		stopProfiles()
		<-run.done
	case <-run.done:
		stopProfiles()
		if run.err == nil {
			run.err = errors.New("returned before it was told to stop")
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("mem %d %d %d %d\n", ms.Mallocs, ms.TotalAlloc, ms.NumGC, goPeak.Load())
	if run.err != nil {
		fmt.Fprintf(os.Stderr, "bench child %s: %v\n", s.Contestant, run.err)
		return 1
	}
	return 0
}

// startProfiles starts the profiles s asks for; stop ends them and writes them.
func startProfiles(s childSpec) (stop func(), err error) {
	var stops []func() error
	if s.CPUProfile != "" {
		f, err := os.Create(s.CPUProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		stops = append(stops, func() error { pprof.StopCPUProfile(); return f.Close() })
	}
	if s.BlockProfile != "" {
		runtime.SetBlockProfileRate(1)
		runtime.SetMutexProfileFraction(1)
		stops = append(stops, func() error {
			return errors.Join(writeProfile("block", s.BlockProfile+".block"), writeProfile("mutex", s.BlockProfile+".mutex"))
		})
	}
	if s.MemProfile != "" {
		if err := writeProfile("allocs", s.MemProfile+".before"); err != nil {
			return nil, err
		}
		stops = append(stops, func() error { return writeProfile("allocs", s.MemProfile+".after") })
	}
	return func() {
		for _, stop := range stops {
			if err := stop(); err != nil {
				fmt.Fprintln(os.Stderr, "bench child:", err)
			}
		}
	}, nil
}

// sampleGoPeak samples what the Go runtime holds from the OS (every memory class but
// the heap released to it) every 50 ms until ctx ends, and keeps the largest value: the
// Go part of the process's peak RSS; the rest is librdkafka's (or the C library's).
func sampleGoPeak(ctx context.Context) *atomic.Uint64 {
	var peak atomic.Uint64
	samples := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	read := func() {
		metrics.Read(samples)
		if v := samples[0].Value.Uint64() - samples[1].Value.Uint64(); v > peak.Load() {
			peak.Store(v)
		}
	}
	read()
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				read()
			}
		}
	}()
	return &peak
}

// child is a running contestant process.
type child struct {
	name  string
	cmd   *exec.Cmd
	first atomic.Int64 // unix ns from its "first" line

	mu      sync.Mutex
	mem     [4]uint64 // mallocs, bytes, GCs and the Go peak from its "mem" line
	haveMem bool
	result  string // the JSON of its last "result" line

	stderr *tail
	done   chan struct{} // closed when Wait has returned
	err    error         // Wait's result, once done is closed

	hwm atomic.Int64 // the child's VmHWM (peak RSS), bytes, as last sampled
}

// sampleHWM reads the child's peak RSS (VmHWM in /proc/PID/status) every 50 ms until it
// exits; it misses only growth in the last 50 ms (the shutdown). rusage's max RSS would
// not do: Go starts children with vfork, and Linux carries the harness's high-water mark,
// which grows trial by trial, into the child's rusage.
func (c *child) sampleHWM() {
	path := fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if hwm := procStatus(path, "VmHWM:")[0]; hwm > 0 {
			c.hwm.Store(hwm)
		}
		select {
		case <-c.done:
			return
		case <-tick.C:
		}
	}
}

// startChild starts path with args; echo, when set, gets a copy of its stderr. The child
// gets SIGKILL if the harness dies (Pdeathsig), so a crashed harness leaves no child
// running.
func startChild(name string, echo io.Writer, path string, args ...string) (*child, error) {
	ch := &child{name: name, stderr: &tail{max: 16 << 10}, done: make(chan struct{})}
	cmd := exec.Command(path, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, ch.stderr
	if echo != nil {
		cmd.Stderr = io.MultiWriter(ch.stderr, echo)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second // bounds Wait's copying should the pipes outlive the process
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	ch.cmd = cmd
	parsed := make(chan struct{})
	go func() {
		defer close(parsed)
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			ch.parse(sc.Text())
		}
		io.Copy(io.Discard, pr) // after a line too long to scan
	}()
	go func() {
		ch.err = cmd.Wait()
		pw.Close()
		<-parsed
		close(ch.done)
	}()
	go ch.sampleHWM()
	return ch, nil
}

func (c *child) parse(line string) {
	f := strings.Fields(line)
	switch {
	case len(f) == 2 && f[0] == "first":
		if ns, err := strconv.ParseInt(f[1], 10, 64); err == nil {
			c.first.CompareAndSwap(0, ns)
		}
	case (len(f) == 4 || len(f) == 5) && f[0] == "mem": // gokabench reports no Go peak
		var m [4]uint64
		for i := range len(f) - 1 {
			m[i], _ = strconv.ParseUint(f[i+1], 10, 64)
		}
		c.mu.Lock()
		c.mem, c.haveMem = m, true
		c.mu.Unlock()
	case len(f) >= 2 && f[0] == "result":
		c.mu.Lock()
		c.result = strings.TrimSpace(strings.TrimPrefix(line, "result"))
		c.mu.Unlock()
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM and waits up to grace for the child to exit; a child still running
// then gets SIGKILL and another bounded wait. It returns an error if the child did not
// exit on SIGTERM or exited non-zero.
func (c *child) stop(grace time.Duration) error {
	select {
	case <-c.done:
		return c.exitErr()
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.exitErr()
	case <-time.After(grace):
	}
	_ = c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL for 10s", c.name, c.pid())
	}
	return fmt.Errorf("%s (pid %d) did not exit within %s of SIGTERM; killed%s", c.name, c.pid(), grace, c.stderr.suffix())
}

// kill ends a child that is still running (error paths); bounded.
func (c *child) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		fmt.Fprintf(os.Stderr, "bench: %s (pid %d) survived SIGKILL for 10s\n", c.name, c.pid())
	}
}

func (c *child) exitErr() error {
	if c.err != nil {
		return fmt.Errorf("%s (pid %d): %w%s", c.name, c.pid(), c.err, c.stderr.suffix())
	}
	return nil
}

// usage returns the exited child's user+sys CPU time (rusage) and peak RSS in bytes
// (sampled VmHWM; see sampleHWM).
func (c *child) usage() (time.Duration, int64) {
	ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok || ru == nil {
		return 0, c.hwm.Load()
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), c.hwm.Load()
}

func (c *child) memStats() ([4]uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mem, c.haveMem
}

// idleRSS runs path with -h (process start and package initialisation, no work) and
// returns its peak RSS as the child itself saw it: the floor under each binary's figures.
// The binary may exit before a sample is taken; then rusage's figure is returned, which
// is the harness's own RSS at that moment (see sampleHWM), an upper bound.
func idleRSS(ctx context.Context, path string) (int64, error) {
	ch, err := startChild("idle", nil, path, "-h")
	if err != nil {
		return 0, err
	}
	select {
	case <-ch.done:
	case <-time.After(30 * time.Second):
		ch.kill()
		return 0, fmt.Errorf("%s -h did not exit within 30s", path)
	case <-ctx.Done():
		ch.kill()
		return 0, ctx.Err()
	}
	if hwm := ch.hwm.Load(); hwm > 0 {
		return hwm, nil
	}
	ru, ok := ch.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, errors.New("no rusage")
	}
	return ru.Maxrss * 1024, nil
}

// tail keeps the last max bytes written to it (a child's stderr, for error reports).
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// suffix formats the kept stderr's last 30 lines for an error message.
func (t *tail) suffix() string {
	s := strings.TrimSpace(t.String())
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	return "; its stderr ends:\n    " + strings.Join(lines[max(0, len(lines)-30):], "\n    ")
}

// writeProfile writes the named runtime profile (allocs, block, mutex) to path.
func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
