package integration

import (
	"bufio"
	"cmp"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The judge of the distributed-process tests: an outside checker that measures the
// overlap of two instances of one process (overlap_ms) and counts concurrent holders of
// a protected resource. It runs in the test process and listens on a Unix
// socket; every process instance in every distnode OS process connects and reports its
// start, a heartbeat every 5ms, and its stop, each stamped with CLOCK_MONOTONIC by the
// sender (one machine, one clock; the receipt time is kept too, to bound the reporting
// lag). The framework's own view is never consulted.
//
//   - An instance is alive at time x if it reported (start, heartbeat, write) within two
//     heartbeat intervals before x, and had not reported its stop before x.
//   - overlap_ms of a process = the time during which two of its instances were alive.
//   - span overlap = the stricter form: an instance occupies [start, stop] (or [start, last
//     report] when it never reported a stop: killed), and any intersection of two counts.
//   - gap_ms of a hand-off = the next instance's start − the previous instance's end.
//
// The fenced-resource double: a write from slice s with token t is accepted iff t ≥ the
// highest token it accepted for s (Kleppmann's fencing-token storage). A write is stale
// when its token is below the highest token any instance of s has started with (the
// checker knows it from the start reports): stale_accepted must be 0.

// distMono is CLOCK_MONOTONIC in nanoseconds: the clock distnode stamps its reports with.
func distMono() int64 {
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		panic(errno)
	}
	return ts.Nano()
}

type distSpan struct{ a, b int64 }

// distInst is one process instance as the checker saw it.
type distInst struct {
	proc   int
	uuid   string
	node   string
	token  int64
	slice  int32
	start  int64 // mono ns of the start report
	last   int64 // mono ns of the last report of any kind
	stop   int64 // mono ns of the stop report; 0 if none
	cancel int64 // mono ns of the "cancelled but ignoring it" report (stuck process); 0 if none
	closed int64 // mono ns (receipt) when its connection closed; 0 while open
	alive  []distSpan

	accepted, rejected  int   // fenced writes
	firstRej, lastWrite int64 // mono ns
}

// end is the last moment the instance is known to have run.
func (in *distInst) end() int64 {
	if in.stop > 0 {
		return in.stop
	}
	return in.last
}

func (in *distInst) running() bool { return in.stop == 0 && in.closed == 0 }

func (in *distInst) String() string {
	return fmt.Sprintf("proc %d %s@%s tok %d", in.proc, in.uuid[:8], in.node, in.token)
}

type distChecker struct {
	path  string
	ln    net.Listener
	hb    int64 // ns: the heartbeat interval; alive = reported within 2*hb
	conns sync.WaitGroup

	mu        sync.Mutex
	insts     map[string]*distInst
	byProc    map[int][]*distInst // in start order
	lastMove  int64               // mono ns of the last start or stop
	fenceHigh map[int32]int64     // slice -> highest token the double accepted
	maxClaim  map[int32]int64     // slice -> highest token any instance started with
	writes    int
	staleAcc  int // stale writes accepted (must be 0)
	staleRej  int // stale writes rejected
	maxLag    int64
	errs      []string
	open      map[net.Conn]bool
}

// newDistChecker listens on a fresh Unix socket; it is closed in tb's cleanup.
func newDistChecker(tb testing.TB, hb time.Duration) *distChecker {
	tb.Helper()
	// A short directory: Unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "dck")
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, "c.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	c := &distChecker{path: path, ln: ln, hb: int64(hb), insts: map[string]*distInst{}, byProc: map[int][]*distInst{},
		fenceHigh: map[int32]int64{}, maxClaim: map[int32]int64{}, open: map[net.Conn]bool{}}
	c.conns.Add(1)
	go c.accept()
	tb.Cleanup(func() {
		ln.Close()
		c.mu.Lock()
		for conn := range c.open {
			conn.Close()
		}
		c.mu.Unlock()
		c.conns.Wait()
		os.RemoveAll(dir)
	})
	return c
}

func (c *distChecker) accept() {
	defer c.conns.Done()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.open[conn] = true
		c.mu.Unlock()
		c.conns.Add(1)
		go c.serve(conn)
	}
}

func (c *distChecker) serve(conn net.Conn) {
	defer c.conns.Done()
	defer conn.Close()
	var in *distInst
	r := bufio.NewScanner(conn)
	w := bufio.NewWriter(conn)
	for r.Scan() {
		recv := distMono()
		f := strings.Fields(r.Text())
		reply, err := c.handle(&in, f, recv)
		if err != nil {
			c.mu.Lock()
			c.errs = append(c.errs, fmt.Sprintf("%q: %v", r.Text(), err))
			c.mu.Unlock()
			return
		}
		if reply != "" {
			w.WriteString(reply)
			if w.Flush() != nil {
				break
			}
		}
	}
	c.mu.Lock()
	delete(c.open, conn)
	if in != nil {
		in.closed = distMono()
		if in.stop == 0 {
			c.lastMove = in.closed
		}
	}
	c.mu.Unlock()
}

func (c *distChecker) handle(inp **distInst, f []string, recv int64) (reply string, err error) {
	if len(f) < 4 {
		return "", fmt.Errorf("short report")
	}
	num := func(s string) int64 {
		v, e := strconv.ParseInt(s, 10, 64)
		if e != nil && err == nil {
			err = e
		}
		return v
	}
	proc := int(num(f[1]))
	t := num(f[len(f)-1])
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxLag = max(c.maxLag, recv-t)
	in := *inp
	if f[0] == "S" {
		if in != nil || len(f) != 7 {
			return "", fmt.Errorf("bad start")
		}
		in = &distInst{proc: proc, uuid: f[2], node: f[3], token: num(f[4]), slice: int32(num(f[5])), start: t}
		if err != nil {
			return "", err
		}
		*inp = in
		c.insts[in.uuid] = in
		c.byProc[proc] = append(c.byProc[proc], in)
		c.maxClaim[in.slice] = max(c.maxClaim[in.slice], in.token)
		c.lastMove = t
		in.touch(t, c.hb)
		return "", nil
	}
	if in == nil || f[2] != in.uuid || proc != in.proc {
		return "", fmt.Errorf("report before start or for another instance")
	}
	switch f[0] {
	case "H":
		in.touch(t, c.hb)
	case "C":
		in.cancel = t
		in.touch(t, c.hb)
	case "X":
		in.touch(t, c.hb)
		in.stop = t
		in.alive[len(in.alive)-1].b = t
		c.lastMove = t
	case "W":
		if len(f) != 6 {
			return "", fmt.Errorf("bad write")
		}
		slice, token := int32(num(f[3])), num(f[4])
		in.touch(t, c.hb)
		in.lastWrite = t
		c.writes++
		stale := token < c.maxClaim[slice]
		if token >= c.fenceHigh[slice] {
			c.fenceHigh[slice] = token
			in.accepted++
			if stale {
				c.staleAcc++
			}
			return "A\n", err
		}
		in.rejected++
		if in.firstRej == 0 {
			in.firstRej = t
		}
		if stale {
			c.staleRej++
		}
		return "R\n", err
	default:
		return "", fmt.Errorf("unknown report")
	}
	return "", err
}

// touch extends the instance's alive coverage with a report at t.
func (in *distInst) touch(t, hb int64) {
	in.last = max(in.last, t)
	if n := len(in.alive); n > 0 && t <= in.alive[n-1].b {
		in.alive[n-1].b = max(in.alive[n-1].b, t+2*hb)
		return
	}
	in.alive = append(in.alive, distSpan{t, t + 2*hb})
}

// distView is a copy of the checker's state at one moment.
type distView struct {
	at      int64
	procs   map[int][]distInst // every instance, in start order
	quiet   time.Duration      // since the last start or stop
	errs    []string
	maxLag  time.Duration
	writes  int
	staleAc int
	staleRj int
}

func (c *distChecker) view() distView {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := distMono()
	v := distView{at: now, procs: map[int][]distInst{}, quiet: time.Duration(now - c.lastMove), errs: slices.Clone(c.errs),
		maxLag: time.Duration(c.maxLag), writes: c.writes, staleAc: c.staleAcc, staleRj: c.staleRej}
	for p, list := range c.byProc {
		for _, in := range list {
			cp := *in
			cp.alive = slices.Clone(in.alive)
			v.procs[p] = append(v.procs[p], cp)
		}
	}
	return v
}

// running returns each process's running instances (started, no stop, connection open).
func (v distView) running() map[int][]distInst {
	out := map[int][]distInst{}
	for p, list := range v.procs {
		for _, in := range list {
			if in.running() {
				out[p] = append(out[p], in)
			}
		}
	}
	return out
}

// placement is process -> node of its single running instance; ok is false unless every
// one of procs processes runs exactly once.
func (v distView) placement(procs int) (where map[int]string, ok bool) {
	where = map[int]string{}
	run := v.running()
	for p := range procs {
		if len(run[p]) != 1 {
			return where, false
		}
		where[p] = run[p][0].node
	}
	return where, true
}

// overlapMs is overlap_ms of process p: the time two of its instances were alive at once
// (heartbeat coverage), counting only time after from (mono ns; 0 for all).
func (v distView) overlapMs(p int, from int64) float64 {
	type ev struct {
		t int64
		d int
	}
	var evs []ev
	for _, in := range v.procs[p] {
		for _, s := range in.alive {
			a, b := max(s.a, from), s.b
			if in.running() {
				b = min(b, v.at) // not in the future
			}
			if b > a {
				evs = append(evs, ev{a, +1}, ev{b, -1})
			}
		}
	}
	slices.SortFunc(evs, func(x, y ev) int {
		if x.t != y.t {
			return cmp.Compare(x.t, y.t)
		}
		return cmp.Compare(x.d, y.d) // ends before starts at the same instant
	})
	var total int64
	n := 0
	var since int64
	for _, e := range evs {
		if n >= 2 {
			total += e.t - since
		}
		n += e.d
		since = e.t
	}
	return float64(total) / 1e6
}

// spanOverlaps lists every pair of instances of p whose [start, end] intersect (end = stop,
// or the last report of an instance that never stopped; now for a running one).
func (v distView) spanOverlaps(p int) []string {
	var out []string
	list := v.procs[p]
	end := func(in distInst) int64 {
		if in.running() {
			return v.at
		}
		return in.end()
	}
	for i := range list {
		for j := i + 1; j < len(list); j++ {
			a, b := list[i], list[j]
			lo, hi := max(a.start, b.start), min(end(a), end(b))
			if hi >= lo {
				out = append(out, fmt.Sprintf("%s and %s overlap %.1fms", a.String(), b.String(), float64(hi-lo)/1e6))
			}
		}
	}
	return out
}

// distHandoff is one change of instance of a process: prev ended, next started.
type distHandoff struct {
	proc       int
	prev, next distInst
	gap        time.Duration // next.start - prev.end (negative: overlap)
}

// handoffs lists consecutive instance pairs of every process whose next instance started
// at or after from and for which keep returns true (keep nil: all).
func (v distView) handoffs(from int64, keep func(h distHandoff) bool) []distHandoff {
	var out []distHandoff
	for p, list := range v.procs {
		for i := 1; i < len(list); i++ {
			h := distHandoff{proc: p, prev: list[i-1], next: list[i], gap: time.Duration(list[i].start - list[i-1].end())}
			if h.next.start >= from && (keep == nil || keep(h)) {
				out = append(out, h)
			}
		}
	}
	slices.SortFunc(out, func(a, b distHandoff) int { return cmp.Compare(a.next.start, b.next.start) })
	return out
}

// distStats formats p50/p99/max of durations in ms.
type distStats struct {
	n                 int
	min, p50, p99, mx float64
}

func distPercentiles(ds []time.Duration) distStats {
	if len(ds) == 0 {
		return distStats{}
	}
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d) / 1e6
	}
	slices.Sort(ms)
	q := func(f float64) float64 {
		i := int(math.Ceil(f*float64(len(ms)))) - 1
		return ms[max(0, min(i, len(ms)-1))]
	}
	return distStats{n: len(ms), min: ms[0], p50: q(0.50), p99: q(0.99), mx: ms[len(ms)-1]}
}

func (s distStats) String() string {
	return fmt.Sprintf("n=%d min=%.1fms p50=%.1fms p99=%.1fms max=%.1fms", s.n, s.min, s.p50, s.p99, s.mx)
}

// fencedWrite is a write to the fenced-resource double made by the test itself, as a
// zombie holding token would make it: it reports whether the resource accepted it.
func (c *distChecker) fencedWrite(slice int32, token int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if token >= c.fenceHigh[slice] {
		c.fenceHigh[slice] = token
		return true
	}
	return false
}
