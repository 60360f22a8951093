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
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
)

// Multi-process fault tests of the distributed package on a real Kafka (SIGTERM, SIGKILL,
// a SIGSTOPped node, a stuck process, and hand-offs). Every node is a distnode OS process, so
// SIGTERM, SIGKILL and SIGSTOP hit one node; the judge is the checker (distChecker, below),
// fed by the process instances themselves over a Unix socket, never the framework. Every
// cluster: 20 processes over a technical topic of 8 partitions created by the framework,
// session timeout 6s, heartbeat 500ms, so a crash is detected in seconds.

const (
	distProcs      = 20
	distPartitions = 8
	distSession    = 6 * time.Second
	distHeartbeat  = 500 * time.Millisecond
	distPing       = 5 * time.Millisecond // process -> checker heartbeat
)

// distNode is one distnode OS process.
type distNode struct {
	*harness.WorkerProc
	id     string
	log    string
	exited int64 // mono ns when Wait returned
}

func (n *distNode) output() string {
	b, _ := os.ReadFile(n.log)
	return string(b)
}

// distCluster is the nodes of one named process list, and its checker.
type distCluster struct {
	tb          testing.TB
	bin         string
	brokers     string
	name        string
	protocol    string
	stopTimeout time.Duration
	extra       []string // more distnode flags for every node
	chk         *distChecker
	dir         string
	t0          int64 // mono ns: the cluster's origin, for timelines
	seq         int
	all         []*distNode
	live        []*distNode // started and not signalled to end, oldest first
}

func newDistCluster(tb testing.TB, bin, brokers, prefix, protocol string, extra ...string) *distCluster {
	tb.Helper()
	c := &distCluster{tb: tb, bin: bin, brokers: brokers, name: stack.UniqueName(prefix), protocol: protocol,
		stopTimeout: 10 * time.Second, extra: extra, chk: newDistChecker(tb, distPing), dir: tb.TempDir(), t0: distMono()}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("--- timeline of %s:\n%s", c.name, c.timeline())
			for _, n := range c.all {
				tb.Logf("--- node %s (pid %d) log tail:\n%s", n.id, n.Pid(), harness.TailFile(n.log, 4000))
			}
		}
	})
	return c
}

// start starts a node with a fresh id; it is SIGKILLed (by PID) in the test's cleanup if
// still running.
func (c *distCluster) start(extra ...string) *distNode {
	c.tb.Helper()
	c.seq++
	id := "n" + strconv.Itoa(c.seq)
	n := &distNode{id: id, log: filepath.Join(c.dir, id+".log")}
	args := []string{"-brokers", c.brokers, "-name", c.name, "-node", id, "-checker", c.chk.path,
		"-procs", strconv.Itoa(distProcs), "-partitions", strconv.Itoa(distPartitions), "-protocol", c.protocol,
		"-session", distSession.String(), "-heartbeat", distHeartbeat.String(), "-stop-timeout", c.stopTimeout.String(),
		"-hb", distPing.String(), "-v"}
	args = append(append(args, c.extra...), extra...)
	n.WorkerProc = harness.StartWorkerThen(c.tb, c.bin, n.log, func() { n.exited = distMono() }, args...)
	c.all = append(c.all, n)
	c.live = append(c.live, n)
	return n
}

// takenOver waits up to within for every process in procs to run on a node other than
// node and returns how long after since that was.
func (c *distCluster) takenOver(procs []int, node string, since time.Time, within time.Duration, msg string) time.Duration {
	var took time.Duration
	require.Eventually(c.tb, func() bool {
		run := c.chk.view().running()
		for _, p := range procs {
			if !slices.ContainsFunc(run[p], func(in distInst) bool { return in.node != node }) {
				return false
			}
		}
		took = time.Since(since)
		return true
	}, within, 20*time.Millisecond, msg)
	return took
}

// drop removes n from the live nodes (it is being stopped or killed).
func (c *distCluster) drop(n *distNode) {
	c.live = slices.DeleteFunc(c.live, func(x *distNode) bool { return x == n })
}

func (c *distCluster) liveIDs() []string {
	ids := make([]string, len(c.live))
	for i, n := range c.live {
		ids[i] = n.id
	}
	return ids
}

// waitStable waits until every process runs exactly once, on exactly the live nodes (each
// runs at least one), and no instance started or stopped for a second. It returns the
// placement (process -> node).
func (c *distCluster) waitStable(timeout time.Duration) map[int]string {
	c.tb.Helper()
	want := c.liveIDs()
	slices.Sort(want)
	deadline := time.Now().Add(timeout)
	var last string
	for {
		v := c.chk.view()
		require.Empty(c.tb, v.errs, "checker protocol errors")
		where, ok := v.placement(distProcs)
		var nodes []string
		for _, n := range where {
			if !slices.Contains(nodes, n) {
				nodes = append(nodes, n)
			}
		}
		slices.Sort(nodes)
		if ok && slices.Equal(nodes, want) && v.quiet >= time.Second {
			return where
		}
		for _, n := range c.live {
			if !n.Running() {
				c.tb.Fatalf("node %s exited (code %d) while waiting for a stable placement:\n%s", n.id, n.State.ExitCode(), harness.TailFile(n.log, 3000))
			}
		}
		last = fmt.Sprintf("placement complete=%v nodes=%v want %v quiet=%s running=%v", ok, nodes, want, v.quiet.Round(time.Millisecond), c.summary(v))
		if time.Now().After(deadline) {
			c.tb.Fatalf("no stable placement after %s: %s", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// summary is process -> running nodes, for messages.
func (c *distCluster) summary(v distView) string {
	run := v.running()
	var b strings.Builder
	for p := range distProcs {
		var ns []string
		for _, in := range run[p] {
			ns = append(ns, in.node)
		}
		fmt.Fprintf(&b, "%d:%s ", p, strings.Join(ns, "+"))
	}
	return b.String()
}

func (c *distCluster) rel(t int64) string {
	if t == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3fs", float64(t-c.t0)/1e9)
}

// timeline lists every instance of every process.
func (c *distCluster) timeline() string {
	v := c.chk.view()
	var b strings.Builder
	for p := range distProcs {
		for _, in := range v.procs[p] {
			fmt.Fprintf(&b, "proc %2d slice %d %s tok=%d start=%s stop=%s last=%s cancel=%s closed=%s writes=%d/%d\n", p, in.slice, in.node, in.token,
				c.rel(in.start), c.rel(in.stop), c.rel(in.last), c.rel(in.cancel), c.rel(in.closed), in.accepted, in.rejected)
		}
	}
	return b.String()
}

// startNodes starts n nodes at once and waits for a stable placement.
func (c *distCluster) startNodes(n int) map[int]string {
	c.tb.Helper()
	for range n {
		c.start()
	}
	t := time.Now()
	where := c.waitStable(2 * time.Minute)
	c.tb.Logf("%s: %d nodes (%s) stable in %s: %s", c.protocol, n, strings.Join(c.liveIDs(), ","), time.Since(t).Round(time.Millisecond), countByNode(where))
	return where
}

func countByNode(where map[int]string) string {
	m := map[string]int{}
	for _, n := range where {
		m[n]++
	}
	var parts []string
	for n, k := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", n, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// procsOn lists the processes placed on node, sorted.
func procsOn(where map[int]string, node string) []int {
	var out []int
	for p, n := range where {
		if n == node {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// requireNoOverlap asserts that no two instances of a process ran at once over the whole
// run, by both measures, for every process not in except.
func (c *distCluster) requireNoOverlap(except ...int) (totalMs float64) {
	c.tb.Helper()
	v := c.chk.view()
	assert.Empty(c.tb, v.errs, "checker protocol errors")
	for p := range distProcs {
		if slices.Contains(except, p) {
			continue
		}
		ms := v.overlapMs(p, 0)
		totalMs += ms
		assert.Zero(c.tb, ms, "overlap_ms of process %d", p)
		assert.Empty(c.tb, v.spanOverlaps(p), "instances of process %d alive at once", p)
	}
	return totalMs
}

// sliceGaps turns per-process hand-offs into per-slice ones: the slice stopped when its
// first process stopped on the old node and runs again when its last process started on
// the new one.
func sliceGaps(hs []distHandoff) []time.Duration {
	type agg struct{ stop, start int64 }
	m := map[string]*agg{}
	for _, h := range hs {
		k := fmt.Sprintf("%s/%d", h.prev.node, h.prev.slice)
		a := m[k]
		if a == nil {
			a = &agg{stop: h.prev.end(), start: h.next.start}
			m[k] = a
		}
		a.stop = min(a.stop, h.prev.end())
		a.start = max(a.start, h.next.start)
	}
	var out []time.Duration
	for _, a := range m {
		out = append(out, time.Duration(a.start-a.stop))
	}
	return out
}

func gapsOf(hs []distHandoff) []time.Duration {
	out := make([]time.Duration, len(hs))
	for i, h := range hs {
		out[i] = h.gap
	}
	return out
}

// killRound sends sig to the oldest live node (SIGTERM: it must exit 0) and waits up to
// wait for it to exit, then until its processes run on the others, each moved exactly
// once. It returns the victim, when it had exited, and the hand-offs away from it.
func (c *distCluster) killRound(where map[int]string, sig syscall.Signal,
	wait time.Duration) (*distNode, time.Time, []distHandoff) {
	c.tb.Helper()
	victim := c.live[0]
	moved := procsOn(where, victim.id)
	from := distMono()
	c.drop(victim)
	victim.Kill(sig)
	code, ok := victim.Wait(wait)
	require.True(c.tb, ok, "node %s did not exit within %s of %s", victim.id, wait, sig)
	exited := time.Now()
	if sig == syscall.SIGTERM {
		require.Equal(c.tb, 0, code, "node %s exit code after SIGTERM; output:\n%s", victim.id, harness.TailFile(victim.log, 3000))
	}
	c.waitStable(time.Minute)
	hs := c.chk.view().handoffs(from, func(h distHandoff) bool { return h.prev.node == victim.id })
	require.Len(c.tb, hs, len(moved), "every process of %s (%v) moved exactly once", victim.id, moved)
	return victim, exited, hs
}

// TestDistributedSIGTERM: three nodes; SIGTERM each of them in turn (restarting a fresh
// node after each, so three stay up). The terminated node's processes stop, then start on
// the others: no two instances of a process are ever alive at once, and the gap of every
// hand-off is reported.
func TestDistributedSIGTERM(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	c := newDistCluster(t, harness.Build(t, "./distnode"), brokers, "dist-sigterm", "cooperative")
	where := c.startNodes(3)
	var term, join []distHandoff
	for round := range 3 {
		victim, _, hs := c.killRound(where, syscall.SIGTERM, 30*time.Second)
		term = append(term, hs...)
		t.Logf("round %d: SIGTERM %s: %d processes moved, gap %s", round, victim.id, len(hs), distPercentiles(gapsOf(hs)))
		from := distMono()
		n := c.start()
		where = c.waitStable(time.Minute)
		hs = c.chk.view().handoffs(from, func(h distHandoff) bool { return h.next.node == n.id })
		join = append(join, hs...)
	}
	total := c.requireNoOverlap()
	v := c.chk.view()
	t.Logf("SIGTERM hand-offs: gap_ms per process %s; per slice %s", distPercentiles(gapsOf(term)), distPercentiles(sliceGaps(term)))
	t.Logf("join hand-offs (slices moving to the new node): gap_ms per process %s", distPercentiles(gapsOf(join)))
	t.Logf("overlap_ms total %.1f; checker max report lag %s", total, v.maxLag)
}

// TestDistributedSIGKILL: SIGKILL a node five times (a different one each time; a fresh
// node replaces it once its processes run elsewhere, so three stay up). Its processes
// restart on the other nodes after the session timeout, never while the killed instance
// was alive.
func TestDistributedSIGKILL(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	c := newDistCluster(t, harness.Build(t, "./distnode"), brokers, "dist-sigkill", "cooperative")
	where := c.startNodes(3)
	var all []distHandoff
	for round := range 5 {
		victim, t0, hs := c.killRound(where, syscall.SIGKILL, 10*time.Second)
		for _, h := range hs {
			assert.Zero(t, h.prev.stop, "killed instance %s reported a stop", h.prev.String())
			assert.Greater(t, h.gap, time.Duration(0), "process %d restarted while its killed instance was alive", h.proc)
		}
		all = append(all, hs...)
		t.Logf("round %d: SIGKILL %s: %d processes restarted elsewhere within %s, gap %s", round, victim.id, len(hs), time.Since(t0).Round(time.Millisecond), distPercentiles(gapsOf(hs)))
		t1 := time.Now()
		n := c.start()
		where = c.waitStable(time.Minute)
		t.Logf("round %d: replacement %s stable in %s", round, n.id, time.Since(t1).Round(time.Millisecond))
	}
	total := c.requireNoOverlap()
	gs := distPercentiles(gapsOf(all))
	t.Logf("SIGKILL hand-offs: gap_ms per process %s; per slice %s (session timeout %s)", gs, distPercentiles(sliceGaps(all)), distSession)
	t.Logf("overlap_ms total %.1f", total)
	assert.GreaterOrEqual(t, gs.min, float64(distSession/time.Millisecond)/2, "a killed node's processes restarted long before the session timeout")
}

// TestDistributedAddNode: add a fourth node to three. With the cooperative protocol only
// the slices that move to the new node stop: no process that stays is restarted. The
// same with the eager protocol, for comparison (every slice stops and starts again).
func TestDistributedAddNode(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	bin := harness.Build(t, "./distnode")
	restarts := map[string]int{}
	for _, proto := range []string{"cooperative", "eager"} {
		t.Run(proto, func(t *testing.T) {
			c := newDistCluster(t, bin, brokers, "dist-add-"+proto, proto)
			c.startNodes(3)
			from := distMono()
			n := c.start()
			t0 := time.Now()
			where := c.waitStable(time.Minute)
			v := c.chk.view()
			same := v.handoffs(from, func(h distHandoff) bool { return h.prev.node == h.next.node })
			moved := v.handoffs(from, func(h distHandoff) bool { return h.prev.node != h.next.node })
			restarts[proto] = len(same)
			t.Logf("%s: 4th node %s stable in %s (%s); processes moved: %d, restarted in place: %d, gap of moves %s",
				proto, n.id, time.Since(t0).Round(time.Millisecond), countByNode(where), len(moved), len(same), distPercentiles(gapsOf(moved)))
			if proto == "cooperative" {
				assert.Zero(t, len(same), "cooperative: processes that did not move were restarted")
				for _, h := range moved {
					assert.Equal(t, n.id, h.next.node, "cooperative: process %d moved between old nodes", h.proc)
				}
				assert.Len(t, moved, len(procsOn(where, n.id)), "cooperative: only the new node's processes moved")
			}
			c.requireNoOverlap()
		})
	}
	t.Logf("restarts of processes that did not move when a 4th node joined: cooperative=%d eager=%d", restarts["cooperative"], restarts["eager"])
}

// TestDistributedPause: SIGSTOP a node for twice the session timeout, then SIGCONT it. Its
// processes start on the others while it is paused (a new claim each, so higher tokens);
// when it resumes, its instances run on until it notices the lost assignment: the overlap
// window is reported, not assumed 0. Their fenced writes carry the old token and are
// rejected by the fenced-resource double: stale_accepted = 0, stale_rejected > 0.
//
// Run with the classic cooperative protocol and with KIP-848 (consumer), for comparison.
func TestDistributedPause(t *testing.T) {
	harness.RequireReal(t)
	bin, brokers := harness.Build(t, "./distnode"), stack.KafkaBrokers(t)
	for _, proto := range []string{"cooperative", "consumer"} {
		t.Run(proto, func(t *testing.T) { pauseScenario(t, bin, brokers, proto) })
	}
}

func pauseScenario(t *testing.T, bin, brokers, proto string) {
	c := newDistCluster(t, bin, brokers, "dist-pause", proto, "-fence")
	where := c.startNodes(3)
	victim := c.live[0]
	paused := procsOn(where, victim.id)
	require.NotEmpty(t, paused)
	old := map[int]distInst{}
	for p, list := range c.chk.view().running() {
		if slices.Contains(paused, p) {
			old[p] = list[0]
		}
	}
	require.Len(t, old, len(paused))

	from := distMono()
	victim.Kill(syscall.SIGSTOP)
	t.Cleanup(func() { victim.Kill(syscall.SIGCONT) })
	stopped := time.Now()
	// While it is paused, its processes start elsewhere (after the session timeout).
	takeover := c.takenOver(paused, victim.id, stopped, 2*distSession, "the paused node's processes did not start elsewhere within 2× the session timeout")
	time.Sleep(2*distSession - time.Since(stopped))
	cont := distMono()
	victim.Kill(syscall.SIGCONT)
	t.Logf("SIGSTOP %s (processes %v) for %s; taken over after %s", victim.id, paused, time.Duration(cont-from).Round(time.Millisecond), takeover.Round(time.Millisecond))

	// The resumed node notices, stops its stale instances and rejoins.
	require.Eventually(t, func() bool {
		v := c.chk.view()
		for _, in := range v.procs {
			for _, x := range in {
				if x.node == victim.id && x.start < from && x.running() {
					return false
				}
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "the resumed node's stale instances did not stop")
	require.True(t, victim.Running(), "the paused node exited after SIGCONT:\n%s", harness.TailFile(victim.log, 3000))
	c.waitStable(time.Minute)

	v := c.chk.view()
	var overlaps []float64
	var total float64
	for _, p := range paused {
		o := old[p]
		var stale distInst
		for _, in := range v.procs[p] {
			if in.uuid == o.uuid {
				stale = in
			}
		}
		var next *distInst
		for _, in := range v.procs[p] {
			if in.start > o.start && in.node != victim.id {
				next = &in
				break
			}
		}
		require.NotNil(t, next, "process %d never started elsewhere", p)
		assert.Less(t, stale.token, next.token, "process %d: the paused instance's token must be lower than the new owner's", p)
		ms := v.overlapMs(p, 0)
		overlaps = append(overlaps, ms)
		total += ms
		t.Logf("process %2d: paused tok=%d (%d writes accepted, %d rejected, stopped %.1fms after SIGCONT), new owner %s tok=%d; overlap_ms=%.1f",
			p, stale.token, stale.accepted, stale.rejected, float64(stale.stop-cont)/1e6, next.node, next.token, ms)
	}
	t.Logf("%s pause: overlap_ms total %.1f over %d processes (max %.1f); fenced writes %d, stale_accepted %d, stale_rejected %d",
		proto, total, len(paused), slices.Max(overlaps), v.writes, v.staleAc, v.staleRj)
	assert.Zero(t, v.staleAc, "stale_accepted: a write with a superseded token was accepted")
	if v.staleRj == 0 {
		// The resumed instances were stopped before they wrote (a race the framework won);
		// show the fence still rejects their token by writing with it ourselves.
		for _, p := range paused {
			o := old[p]
			assert.False(t, c.chk.fencedWrite(o.slice, o.token), "process %d: a write with the paused instance's token %d was accepted", p, o.token)
		}
		t.Logf("%s pause: the zombies made no fenced write before stopping; writes with their tokens by the test were rejected", proto)
	}
	// The processes that were not on the paused node never overlapped.
	c.requireNoOverlap(paused...)
}

// TestDistributedStuckProcess: process 5 ignores cancellation (on every node). A revoke of
// its slice cancels it; after the stop timeout Run fails naming it, and the node exits
// with code 3 while still holding the slice. Process 5 must start elsewhere only after the
// stuck instance is gone. Three triggers:
//
//   - sigterm: SIGTERM the node running it; stop timeout 3s, below the 6s session timeout.
//   - sigterm-stop-timeout-above-session: the same with a 10s stop timeout (the defaults
//     are 30s and 10s: the stop timeout is above the session timeout).
//   - rebalance: eager protocol, one node runs everything and a second joins, so every
//     slice is revoked; 10s stop timeout.
func TestDistributedStuckProcess(t *testing.T) {
	harness.RequireReal(t)
	brokers := stack.KafkaBrokers(t)
	bin := harness.Build(t, "./distnode")
	t.Run("sigterm", func(t *testing.T) { stuckScenario(t, bin, brokers, "cooperative", 3*time.Second, false) })
	t.Run("sigterm-stop-timeout-above-session", func(t *testing.T) {
		stuckScenario(t, bin, brokers, "cooperative", 10*time.Second, false)
	})
	t.Run("rebalance", func(t *testing.T) { stuckScenario(t, bin, brokers, "eager", 10*time.Second, true) })
}

func stuckScenario(t *testing.T, bin, brokers, proto string, stopTimeout time.Duration, byRebalance bool) {
	const stuck = 5
	c := newDistCluster(t, bin, brokers, "dist-stuck", proto, "-stuck", strconv.Itoa(stuck))
	c.stopTimeout = stopTimeout
	nodes := 3
	if byRebalance {
		nodes = 1
	}
	where := c.startNodes(nodes)
	var victim *distNode
	for _, n := range c.live {
		if where[stuck] == n.id {
			victim = n
		}
	}
	require.NotNil(t, victim)
	moved := procsOn(where, victim.id)
	from := distMono()
	c.drop(victim)
	if byRebalance {
		c.start()
	} else {
		victim.Kill(syscall.SIGTERM)
	}
	code, ok := victim.Wait(stopTimeout + 30*time.Second)
	require.True(t, ok, "node %s with a stuck process did not exit", victim.id)
	out := victim.output()
	assert.Equal(t, 3, code, "exit code of the node with a stuck process; output:\n%s", harness.TailFile(victim.log, 3000))
	assert.Contains(t, out, "did not stop within the stop timeout")
	assert.Contains(t, out, fmt.Sprintf("process %d (slice %d)", stuck, stuck%distPartitions))
	c.waitStable(time.Minute)

	v := c.chk.view()
	hs := v.handoffs(from, func(h distHandoff) bool { return h.prev.node == victim.id })
	require.Len(t, hs, len(moved))
	for _, h := range hs {
		if h.proc != stuck {
			continue
		}
		require.NotZero(t, h.prev.cancel, "the stuck instance never saw its cancellation")
		assert.Zero(t, h.prev.stop, "the stuck instance reported a stop")
		assert.GreaterOrEqual(t, time.Duration(h.prev.last-h.prev.cancel), stopTimeout-500*time.Millisecond,
			"the stuck instance ran on after its cancellation (until the node exited)")
		assert.Greater(t, h.next.start, h.prev.last, "a second instance of the stuck process started while it was alive")
		assert.Greater(t, h.next.start, victim.exited, "a second instance of the stuck process started before its node exited")
		t.Logf("%s, stop timeout %s: stuck process %d cancelled at %s, alive until %s (node %s exit at %s, code %d), next instance on %s at %s: %s after its last report, %s after node exit",
			proto, stopTimeout, stuck, c.rel(h.prev.cancel), c.rel(h.prev.last), victim.id, c.rel(victim.exited), code, h.next.node, c.rel(h.next.start),
			h.gap.Round(time.Millisecond), time.Duration(h.next.start-victim.exited).Round(time.Millisecond))
	}
	t.Logf("node %s: trigger to exit %s; its %d processes moved, gap %s", victim.id, time.Duration(victim.exited-from).Round(time.Millisecond), len(hs), distPercentiles(gapsOf(hs)))
	t.Logf("overlap_ms of the stuck process: %.1f", v.overlapMs(stuck, 0))
	c.requireNoOverlap()
}

// BenchmarkHandoffGap measures the graceful hand-off gap (SIGTERM a node → its slices run
// again on the others, as seen by the checker) over at least 20 slice hand-offs, with the
// classic cooperative-sticky protocol and with KIP-848 (Protocol: distributed.Consumer).
// Not part of the normal test run:
//
//	go test -run XXX -bench BenchmarkHandoffGap -benchtime 1x -timeout 20m ./integration/
func BenchmarkHandoffGap(b *testing.B) {
	if testing.Short() {
		b.Skip("short mode: this benchmark runs against a real Kafka")
	}
	brokers := stack.KafkaBrokers(b)
	bin := harness.Build(b, "./distnode")
	res := map[string][2]distStats{}
	protos := []string{"cooperative", "consumer"}
	for _, proto := range protos {
		b.Run(proto, func(b *testing.B) {
			c := newDistCluster(b, bin, brokers, "dist-bench-"+proto, proto)
			where := c.startNodes(3)
			var hs []distHandoff
			for round := 0; len(sliceGaps(hs)) < 20 && round < 15; round++ {
				_, _, h := c.killRound(where, syscall.SIGTERM, 30*time.Second)
				hs = append(hs, h...)
				c.start()
				where = c.waitStable(time.Minute)
			}
			c.requireNoOverlap()
			slice, proc := distPercentiles(sliceGaps(hs)), distPercentiles(gapsOf(hs))
			res[proto] = [2]distStats{slice, proc}
			b.ReportMetric(slice.p50, "p50_ms")
			b.ReportMetric(slice.p99, "p99_ms")
			b.ReportMetric(float64(slice.n), "handoffs")
		})
	}
	var s strings.Builder
	fmt.Fprintf(&s, "graceful hand-off gap (SIGTERM -> slice running elsewhere), 20 processes, 8 slices, 3 nodes:\n")
	fmt.Fprintf(&s, "%-12s %9s %9s %9s %9s %9s   %s\n", "protocol", "handoffs", "min_ms", "p50_ms", "p99_ms", "max_ms", "per process")
	for _, proto := range protos {
		r := res[proto]
		fmt.Fprintf(&s, "%-12s %9d %9.1f %9.1f %9.1f %9.1f   %s\n", proto, r[0].n, r[0].min, r[0].p50, r[0].p99, r[0].mx, r[1])
	}
	fmt.Print(s.String()) // the parent of sub-benchmarks has no BENCH output of its own
}

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
