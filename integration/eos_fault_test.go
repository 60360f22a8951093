package integration

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
)

// Exactly-once fault tests (crash loop, fenced zombie, broker kills) on a three-node KRaft
// cluster (replication 3, min.insync.replicas 2) of each test's own. The processor is
// integration/worker (-mode copy -eos, built with -tags chaos) in its own OS process, so
// it can be SIGKILLed at the framework's fail-points, SIGSTOPped and restarted. A
// read_committed reader follows the output during the faults; at the end, once every
// transaction is finished (read_committed end == high watermark on every output
// partition, as EosTestDriver.verifyAllTransactionFinished), fresh read_committed and
// read_uncommitted readers read everything, and harness.AssertExactlyOnce demands of both
// read_committed views: output == input exactly (lost = dups = unexpected = 0); each input
// partition's outputs in offset order within an output partition, each key's values in
// input order; running sums per key equal to the input's; aborted_visible = 0 (no
// read_committed record is a copy the read_uncommitted log shows written again later:
// all copies of an input share its key, hence one output partition, where log order is
// write order).
//
// Each test logs one greppable line of figures: "eos-crash:", "eos-zombie:", "eos-broker:".
// They run in `make test-fault` and skip unless SAMSA_FAULT_TESTS=1.

// eosEnv is one fault test's cluster, topics and worker binary.
type eosEnv struct {
	t          *testing.T
	k          *stack.Kafka
	brokers    string
	ac         *kafka.AdminClient
	bin        string // the chaos-built exactly-once worker
	envBin     string // /usr/bin/env: sets $SAMSA_FAILPOINT and execs the worker (same PID)
	in, out    string
	group      string
	partitions int
	started    time.Time
}

// eosWorkerArgs are the flags every test's workers share: small batches and a 250 ms
// transaction cadence, so a run has many transactions; a 6 s session timeout (the
// broker's test floor allows it).
var eosWorkerArgs = []string{"-batch", "200", "-commit", "250ms", "-session", "6s", "-heartbeat", "1s"}

// newEOSEnv starts a three-node cluster (building the worker meanwhile) and creates the
// input and output topics, replication 3. fastAbort: see newEOSCluster.
func newEOSEnv(t *testing.T, name string, partitions int, fastAbort bool) *eosEnv {
	t.Helper()
	return newEOSCluster(t, name, fastAbort).withTopics(t, name, partitions, 3, nil)
}

// newEOSCluster starts a three-node cluster and builds the worker meanwhile. With
// fastAbort the transaction coordinator looks for timed-out transactions every second
// instead of every 10 s (transaction.abort.timed.out.transaction.cleanup.interval.ms), so
// a dead worker's open transaction is aborted about TransactionTimeout after it began:
// the crash loop's KIP-447-mode restarts recover sooner, and a pause past the transaction
// timeout surely finds the transaction aborted. The broker-kill test keeps the default.
func newEOSCluster(t *testing.T, name string, fastAbort bool) *eosEnv {
	t.Helper()
	e := &eosEnv{t: t, started: time.Now()}
	dir := t.TempDir()
	props := map[string]string{}
	if fastAbort {
		props["transaction.abort.timed.out.transaction.cleanup.interval.ms"] = "1000"
	}
	harness.StartBuilt(t, func() (err error) { e.bin, err = buildEOSWorker(dir); return err }, func() {
		e.k = harness.StartKafka(t, 4*time.Minute, stack.KafkaOptions{Brokers: 3, Props: props}, "start the three-node cluster")
	})
	e.brokers = e.k.Bootstrap()
	t.Logf("%s: three-node cluster ready and exactly-once worker built in %s", name, time.Since(e.started).Round(time.Millisecond))
	e.envBin = harness.EnvBin(t)
	e.ac = harness.NewAdmin(t, e.brokers)
	return e
}

// withTopics returns a copy of e for test t with a fresh group and input and output
// topics (replication rf; outConfig extends the output's configuration).
func (e *eosEnv) withTopics(t *testing.T, name string, partitions, rf int, outConfig map[string]string) *eosEnv {
	t.Helper()
	c := *e
	c.t, c.partitions = t, partitions
	if c.ac == nil {
		c.ac = harness.NewAdmin(t, c.brokers)
	}
	c.in, c.out, c.group = stack.UniqueName(name+"-in"), stack.UniqueName(name+"-out"), stack.UniqueName(name)
	harness.CreateTopic(t, c.brokers, c.in, partitions, rf)
	harness.CreateTopicConfig(t, c.brokers, c.out, partitions, rf, outConfig)
	return &c
}

// buildEOSWorker compiles integration/worker (-mode copy -eos) with the chaos tag (fail-points in)
// into dir.
func buildEOSWorker(dir string) (string, error) { return harness.GoBuild(dir, "./worker", "chaos") }

// startEOSWorker starts an exactly-once worker process with fail-point fp ("" for none) and extra
// flags, its output appended to logPath. It is SIGKILLed by PID at the test's end if it
// still runs (startWorker's cleanup).
func (e *eosEnv) startEOSWorker(logPath, fp string, extra ...string) *harness.WorkerProc {
	e.t.Helper()
	args := []string{"SAMSA_FAILPOINT=" + fp, e.bin, "-mode", "copy", "-eos", "-brokers", e.brokers, "-group", e.group, "-in", e.in, "-out", e.out}
	args = append(append(args, eosWorkerArgs...), extra...)
	return harness.StartWorker(e.t, e.envBin, logPath, args...)
}

// finishRun waits for the producer and for the group's committed offsets to reach the
// input's end, then for every output transaction to finish, stops the given workers with
// SIGTERM (each must exit 0 unless in mayFail), waits for the transactions again and
// returns the input records and the output's final ends.
func (e *eosEnv) finishRun(sp *harness.SeqProducer, alive func() error, workers func() []*harness.WorkerProc, mayFail map[*harness.WorkerProc]bool) ([]harness.Rec, map[int32]int64) {
	t := e.t
	t.Helper()
	require.NoError(t, sp.Wait(4*time.Minute), "producing the input")
	ends := harness.EndOffsets(t, e.brokers, e.in, e.partitions)
	committed, ok := harness.NewProbe(e.brokers, e.group, e.in, len(ends)).WaitCommitted(t, ends, 3*time.Minute, alive)
	require.True(t, ok, "committed offsets %v never reached the input's end offsets %v", committed, ends)
	harness.WaitTxnsFinished(t, e.brokers, e.out, e.partitions, time.Minute)
	for _, w := range workers() {
		if !w.Running() {
			continue
		}
		code, exited := w.Signal(syscall.SIGTERM, time.Minute)
		require.True(t, exited, "exactly-once worker %d did not exit within 1m of SIGTERM", w.Pid())
		if !mayFail[w] {
			assert.Equal(t, 0, code, "exactly-once worker %d exit code after SIGTERM", w.Pid())
		}
	}
	assert.Equal(t, ends, harness.CommittedOffsets(t, e.brokers, e.group, e.in, e.partitions), "committed == input end offsets after the workers stopped")
	outEnds := harness.WaitTxnsFinished(t, e.brokers, e.out, e.partitions, time.Minute)
	return harness.ReadTopic(t, e.brokers, e.in, e.partitions, time.Minute), outEnds
}

// verify reads the output back read_committed and read_uncommitted with fresh readers,
// checks the live reader's view and the final one, and returns the final verdict.
func (e *eosEnv) verify(label string, inputs []harness.Rec, outEnds map[int32]int64, live *harness.TopicReader, lastCopy bool) (harness.EOSVerdict, []harness.TxnRec, []harness.TxnRec) {
	t := e.t
	t.Helper()
	live.WaitEnds(t, outEnds, 2*time.Minute)
	live.Stop()
	during := live.Records()
	rc := harness.ReadTxnTopic(t, e.brokers, e.out, e.partitions, "read_committed", outEnds)
	ru := harness.ReadTxnTopic(t, e.brokers, e.out, e.partitions, "read_uncommitted", outEnds)
	vLive := harness.CheckEOS(inputs, during, ru, lastCopy)
	vEnd := harness.CheckEOS(inputs, rc, ru, lastCopy)
	t.Logf("%s: read_committed during the faults: %s", label, vLive)
	t.Logf("%s: read_committed at the end:        %s", label, vEnd)
	harness.AssertExactlyOnce(t, "read_committed during the faults", len(inputs), vLive)
	harness.AssertExactlyOnce(t, "read_committed at the end", len(inputs), vEnd)
	assert.True(t, harness.SameRecords(during, rc), "the live read_committed reader and the final one saw different records")
	return vEnd, rc, ru
}

// TestEOSFaultCrashLoop: modelled on Kafka's own EOS system test (hard-kill the
// processor repeatedly; read_committed must see every output once). 50,000
// keyed, sequenced records flow into 8 partitions (paced at 330/s, ~150 s; 2,000 before
// the first worker starts) while an exactly-once worker is SIGKILLed 10 times: at the fail-points
// eos-before-send-offsets (outputs produced, offsets not sent), eos-before-commit
// (offsets sent, not committed) and before-produce (a batch handled, not produced), each
// on a seeded N-th hit, and at random moments (which also spread the kills over the
// input); it is restarted after each kill. The first seven workers have a static
// identity (InstanceID "w", hence a fixed transactional.id: each one fences its
// predecessor's open transaction at once and takes its place in the group without a
// rebalance); the last four are dynamic (the KIP-447 default: random transactional.id,
// so the dead worker's transaction holds the output's last stable offset until the
// coordinator aborts it, TransactionTimeout after it began, and its group membership
// until the session times out). read_committed sees output == input exactly, during the
// faults and at the end; aborted_visible = 0; read_uncommitted shows the aborted copies.
func TestEOSFaultCrashLoop(t *testing.T) {
	harness.RequireFaultSuite(t)
	const (
		partitions = 8
		keys       = 800
		records    = 50_000
		backlog    = 2_000
		perSec     = 330 // ~150 s of input: longer than the kills take, so every kill lands mid-stream
		kills      = 10
		static     = 7 // lives 0..6 static (fixed transactional.id), 7..10 dynamic (KIP-447 random id)
	)
	seed := harness.Seed(t)
	t.Logf("eos-crash: seed=%d (set SAMSA_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, 12))
	e := newEOSEnv(t, "eoscrash", partitions, true)
	logPath := harness.WorkerLog(t, "exactly-once worker log")

	live := harness.StartTopicReader(t, e.brokers, e.out, partitions, "read_committed")
	// Paced so that input keeps arriving through the kills; the first worker starts with
	// a backlog of records produced before it.
	sp := harness.StartSeqProducer(t, e.brokers, e.in, partitions, keys, records, perSec)
	for deadline := time.Now().Add(time.Minute); sp.Acked.Load() < backlog; {
		require.True(t, time.Now().Before(deadline), "producer stalled: %d records acknowledged in 1m", sp.Acked.Load())
		time.Sleep(50 * time.Millisecond)
	}

	type life struct {
		w       *harness.WorkerProc
		ident   string // static or dynamic
		fp      string
		started time.Time
		ended   time.Time
		how     string
	}
	var lives []*life
	launch := func(fp string) *life {
		l := &life{fp: fp, ident: "dynamic", started: time.Now()}
		var extra []string
		if len(lives) < static {
			l.ident = "static"
			extra = []string{"-instance", "w"}
		}
		l.w = e.startEOSWorker(logPath, fp, extra...)
		lives = append(lives, l)
		return l
	}
	points := []string{"eos-before-send-offsets", "eos-before-commit", "before-produce", "random"}
	killsBy := map[string]int{}
	var notFired, selfExits int
	first := time.Now()
	for k := 1; k <= kills; k++ {
		point := points[(k-1)%len(points)]
		fp := ""
		switch point {
		case "eos-before-send-offsets", "eos-before-commit":
			fp = fmt.Sprintf("%s:%d", point, 2+rng.IntN(5)) // the 2nd..6th transaction with work (~2 per second here)
		case "before-produce":
			fp = fmt.Sprintf("%s:%d", point, 20+rng.IntN(100)) // one hit per batch (~100 per second here)
		}
		l := launch(fp)
		if fp != "" {
			select {
			case <-l.w.Done():
			case <-time.After(60 * time.Second):
				l.w.Signal(syscall.SIGKILL, 30*time.Second)
				notFired++
				t.Logf("eos-crash: kill %d: fail-point %s did not fire within 60s; SIGKILLed by the test", k, fp)
			}
		} else {
			// Kill a worker that has recovered and is working: 1-3 s after its first
			// output became visible read_committed.
			deadline := time.Now().Add(90 * time.Second)
			for {
				if _, ok := live.Seen(strconv.Itoa(l.w.Pid())); ok || !l.w.Running() {
					break
				}
				require.True(t, time.Now().Before(deadline), "worker %d produced no read_committed output within 90s of its start", l.w.Pid())
				time.Sleep(50 * time.Millisecond)
			}
			// Random kills also spread the faults over the input: this one waits for its
			// slot (k/(kills+2) of the production time after the first start).
			slot := first.Add(time.Duration(k) * time.Duration(records/perSec) * time.Second / (kills + 2))
			time.Sleep(max(time.Until(slot), 0) + time.Second + time.Duration(rng.Int64N(int64(2*time.Second))))
			_, ok := l.w.Signal(syscall.SIGKILL, 30*time.Second)
			require.True(t, ok, "exactly-once worker %d survived SIGKILL", l.w.Pid())
		}
		l.ended, l.how = time.Now(), harness.ExitDesc(l.w)
		if !harness.KilledBy(l.w, syscall.SIGKILL) {
			selfExits++
			t.Errorf("eos-crash: kill %d: worker %d ended by itself (%s), not by the kill; log tail:\n%s", k, l.w.Pid(), l.how, harness.TailFile(logPath, 3000))
		}
		killsBy[point]++
		t.Logf("eos-crash: kill %d: %s worker pid %d, fail-point %q, %s after %s; %d records produced, %d outputs read_committed so far",
			k, l.ident, l.w.Pid(), fp, l.how, l.ended.Sub(l.started).Round(time.Millisecond), sp.Produced.Load(), live.Count())
	}
	final := launch("")
	workers := func() []*harness.WorkerProc { return []*harness.WorkerProc{final.w} }
	inputs, outEnds := e.finishRun(sp, final.w.Alive, workers, nil)
	drained := time.Since(e.started)
	v, _, _ := e.verify("eos-crash", inputs, outEnds, live, true)

	// Recovery: from each kill to the first read_committed output of the next worker.
	var recov []string
	var worst time.Duration
	for i := 1; i < len(lives); i++ {
		first, ok := live.Seen(strconv.Itoa(lives[i].w.Pid()))
		if !ok {
			recov = append(recov, fmt.Sprintf("%d:%s:none", i, lives[i].ident))
			continue
		}
		d := first.Sub(lives[i-1].ended)
		worst = max(worst, d)
		recov = append(recov, fmt.Sprintf("%d:%s:%s", i, lives[i].ident, d.Round(time.Millisecond)))
	}
	fired := map[string]int{}
	for _, p := range points[:3] {
		fired[p] = harness.CountInFile(logPath, "failpoint: SIGKILL at "+p)
	}
	t.Logf("eos-crash: recovery per kill (kill -> first read_committed output of the next worker; static = fixed transactional.id fences at once, dynamic = waits for the transaction timeout): %s",
		strings.Join(recov, " "))
	t.Logf("eos-crash: seed=%d kills=%d kills_by_point=%v failpoint_fired=%v not_fired=%d self_exits=%d records=%d %s worst_recovery=%s total=%s",
		seed, kills, killsBy, fired, notFired, selfExits, len(inputs), v, worst.Round(time.Millisecond), drained.Round(time.Millisecond))
	assert.Equal(t, records, len(inputs), "input records")
	assert.Zero(t, notFired, "fail-points that did not fire")
	assert.Positive(t, v.Aborted, "read_uncommitted shows no aborted records: the kills aborted nothing")
	for _, p := range points[:3] {
		assert.Equal(t, killsBy[p], fired[p], "workers killed at fail-point %s (its stderr line)", p)
	}
}

// groupMembers returns, per member client id, the partitions of topic it owns.
func groupMembers(ac *kafka.AdminClient, group, topic string) (map[string][]int32, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := ac.DescribeConsumerGroups(ctx, []string{group})
	if err != nil {
		return nil, err
	}
	if len(res.ConsumerGroupDescriptions) != 1 {
		return nil, fmt.Errorf("describe group %s: %d descriptions", group, len(res.ConsumerGroupDescriptions))
	}
	d := res.ConsumerGroupDescriptions[0]
	if d.Error.Code() != kafka.ErrNoError {
		return nil, d.Error
	}
	out := map[string][]int32{}
	for _, m := range d.Members {
		ps := []int32{}
		for _, tp := range m.Assignment.TopicPartitions {
			if *tp.Topic == topic {
				ps = append(ps, tp.Partition)
			}
		}
		slices.Sort(ps)
		out[m.ClientID] = ps
	}
	return out, nil
}

func clientID(w *harness.WorkerProc) string { return "worker-" + strconv.Itoa(w.Pid()) }

// zombieLines are the stderr lines of a fenced or rejoining worker worth reporting.
var zombieLines = regexp.MustCompile(`(?i)fenc|illegal_generation|unknown_member|generation|exactly-once|abort|lost|revoked|assigned|rewound|epoch|processor failed|error class|max.poll|timed out|stopped cleanly`)

// TestEOSFaultZombieFenced: a paused instance must be fenced (KIP-447). Two exactly-once workers (dynamic members,
// KIP-447 random transactional ids) share 8 partitions while input flows; worker A (2 s
// transactions) is SIGSTOPped with its transaction open until worker B owns all of A's partitions (at
// least the pause), then gets SIGCONT. Two pauses: 12 s (2× the 6 s session timeout,
// past the 10 s transaction timeout: the coordinator aborts A's transaction and bumps its
// producer epoch meanwhile) and 8 s (past the session timeout, within the transaction
// timeout: A wakes up with its transaction still open and only the group generation
// fences it). Nothing A wrote under its old generation (from SIGCONT until it is
// assigned partitions again, if ever) is visible read_committed, and the output equals
// the input exactly. What A printed (its error class), and whether it stopped or
// rejoined, are reported, not asserted.
func TestEOSFaultZombieFenced(t *testing.T) {
	harness.RequireFaultSuite(t)
	c := newEOSCluster(t, "eoszombie", true)
	for _, pause := range []time.Duration{12 * time.Second, 8 * time.Second} {
		name := fmt.Sprintf("pause-%s", pause)
		if !t.Run(name, func(t *testing.T) { zombieRun(t, c.withTopics(t, "eoszombie", 8, 3, nil), pause) }) {
			return
		}
	}
	t.Logf("eos-zombie: total %s", time.Since(c.started).Round(time.Millisecond))
}

func zombieRun(t *testing.T, e *eosEnv, pause time.Duration) {
	const (
		keys    = 800
		records = 20_000
		perSec  = 400
	)
	partitions := e.partitions
	label := fmt.Sprintf("eos-zombie[pause=%s]", pause)
	logA, logB := harness.WorkerLog(t, "worker A (zombie) log"), harness.WorkerLog(t, "worker B log")
	live := harness.StartTopicReader(t, e.brokers, e.out, partitions, "read_committed")
	sp := harness.StartSeqProducer(t, e.brokers, e.in, partitions, keys, records, perSec)

	// A commits every 2 s, so when it is stopped its open transaction almost surely holds
	// outputs (and, half the time, offsets sent): the zombie has something to hide.
	a := e.startEOSWorker(logA, "", "-v", "-commit", "2s")
	live.WaitSeen(t, 90*time.Second, a)
	b := e.startEOSWorker(logB, "", "-v")
	live.WaitSeen(t, 90*time.Second, b)
	var ownedA []int32
	require.Eventually(t, func() bool {
		m, err := groupMembers(e.ac, e.group, e.in)
		if err != nil || len(m) != 2 {
			return false
		}
		ownedA = m[clientID(a)]
		return len(ownedA) > 0 && len(m[clientID(b)]) > 0 && len(ownedA)+len(m[clientID(b)]) == partitions
	}, time.Minute, 200*time.Millisecond, "the group never settled with both workers owning partitions")
	// Stop A in the middle of a transaction: soon after one of its commits became visible (a
	// burst of its records arriving read_committed), once a record it wrote after that commit
	// is in the log (read_uncommitted), about a second before its next commit. On a loaded
	// machine A's records can wait in its producer's queue for a while, so the log is what
	// is waited on: a stop with nothing of A's in the log would have nothing to fence.
	pending := harness.StartTopicReader(t, e.brokers, e.out, partitions, "read_uncommitted")
	zombieTag := strconv.Itoa(a.Pid())
	for deadline := time.Now().Add(60 * time.Second); ; {
		prev, committedAt := live.Latest(zombieTag), time.Time{}
		for committedAt.IsZero() {
			require.True(t, time.Now().Before(deadline), "worker A committed nothing visible with a record written after it for 60s")
			if l := live.Latest(zombieTag); l.After(prev) && time.Since(l) < 200*time.Millisecond {
				committedAt = l
			}
			time.Sleep(20 * time.Millisecond)
		}
		for time.Since(committedAt) < 1200*time.Millisecond && !pending.Written(zombieTag).After(committedAt) {
			time.Sleep(20 * time.Millisecond)
		}
		if pending.Written(zombieTag).After(committedAt) {
			break
		}
	}
	pending.Stop()

	tStop := time.Now()
	require.NoError(t, syscall.Kill(a.Pid(), syscall.SIGSTOP))
	t.Logf("%s: worker A pid %d (partitions %v) SIGSTOPped; worker B pid %d", label, a.Pid(), ownedA, b.Pid())

	// A stays stopped until B owns every partition, and for at least the pause.
	var tTakeover time.Time
	for deadline := tStop.Add(90 * time.Second); tTakeover.IsZero(); {
		require.True(t, time.Now().Before(deadline), "worker B did not take over A's partitions within 90s")
		require.True(t, b.Running(), "worker B exited: %s", harness.ExitDesc(b))
		if m, err := groupMembers(e.ac, e.group, e.in); err == nil && len(m) == 1 && len(m[clientID(b)]) == partitions {
			tTakeover = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(max(time.Until(tStop.Add(pause)), 0))
	tCont := time.Now()
	require.NoError(t, syscall.Kill(a.Pid(), syscall.SIGCONT))
	t.Logf("%s: B owned all partitions %s after the SIGSTOP; A resumed after %s",
		label, tTakeover.Sub(tStop).Round(time.Millisecond), tCont.Sub(tStop).Round(time.Millisecond))

	// Watch the zombie for 20 s: does it stop, or rejoin the group with partitions?
	rejoined := ""
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end) && a.Running() && rejoined == ""; {
		if m, err := groupMembers(e.ac, e.group, e.in); err == nil && len(m[clientID(a)]) > 0 {
			rejoined = fmt.Sprintf("back in the group %s after SIGCONT, owning %v", time.Since(tCont).Round(time.Millisecond), m[clientID(a)])
		}
		time.Sleep(250 * time.Millisecond)
	}
	zombieEnd := harness.ExitDesc(a)
	t.Logf("%s: worker A after SIGCONT: %s; %s", label, zombieEnd, orDefault(rejoined, "not seen owning partitions again"))

	workers := func() []*harness.WorkerProc { return []*harness.WorkerProc{a, b} }
	inputs, outEnds := e.finishRun(sp, b.Alive, workers, map[*harness.WorkerProc]bool{a: true})
	aExit := harness.ExitDesc(a)
	v, rc, ru := e.verify(label, inputs, outEnds, live, false)

	// A's old generation ends when it is assigned partitions again after SIGCONT (its
	// log's first "group: assigned" from then on), or never.
	tRejoin := time.Time{}
	var lines []string
	for _, l := range strings.Split(harness.TailFile(logA, 1<<22), "\n") {
		ts := slogTime(l)
		if !ts.IsZero() && ts.Before(tCont.Add(-time.Second)) {
			continue
		}
		if tRejoin.IsZero() && !ts.IsZero() && !ts.Before(tCont) && strings.Contains(l, `msg="group: assigned"`) {
			tRejoin = ts
		}
		if zombieLines.MatchString(l) {
			lines = append(lines, l)
		}
	}
	if len(lines) > 30 {
		lines = append(lines[:30], fmt.Sprintf("... %d more", len(lines)-30))
	}
	cont := tCont.Truncate(time.Millisecond)
	stale := func(r harness.TxnRec) bool { // written by A after SIGCONT under its old generation
		return !r.Timestamp.Before(cont) && (tRejoin.IsZero() || r.Timestamp.Before(tRejoin))
	}
	zombie := strconv.Itoa(a.Pid())
	committed := map[[2]int64]bool{}
	var visibleStale, visibleBefore, visibleRejoined int
	for _, r := range rc {
		committed[[2]int64{int64(r.Partition), r.Offset}] = true
		if r.Writer() != zombie {
			continue
		}
		switch {
		case r.Timestamp.Before(cont):
			visibleBefore++
		case stale(r):
			visibleStale++
		default:
			visibleRejoined++
		}
	}
	var hidden, hiddenStale int
	for _, r := range ru {
		if r.Writer() == zombie && !committed[[2]int64{int64(r.Partition), r.Offset}] {
			hidden++
			if stale(r) {
				hiddenStale++
			}
		}
	}
	// B's recovery: its first read_committed output of one of A's input partitions.
	tRecover := time.Time{}
	for _, r := range rc {
		if _, p, _, w, ok := r.Fields(); ok && w == strconv.Itoa(b.Pid()) && slices.Contains(ownedA, p) && !r.Timestamp.Before(tStop) {
			if tRecover.IsZero() || r.Timestamp.Before(tRecover) {
				tRecover = r.Timestamp
			}
		}
	}
	t.Logf("%s: what worker A printed from SIGCONT on:\n%s", label, strings.Join(lines, "\n"))
	t.Logf("%s: records=%d %s zombie_pid=%s zombie_after_sigcont=%q zombie_final=%q rejoined_at=%s zombie_visible_before_pause=%d zombie_stale_visible=%d zombie_visible_after_rejoin=%d zombie_hidden=%d zombie_stale_hidden=%d takeover=%s b_first_output_of_a_partitions=%s",
		label, len(inputs), v, zombie, zombieEnd, aExit, durOrNone(tRejoin, tCont), visibleBefore, visibleStale, visibleRejoined, hidden, hiddenStale,
		tTakeover.Sub(tStop).Round(time.Millisecond), durOrNone(tRecover, tStop))
	assert.Equal(t, records, len(inputs), "input records")
	assert.Zero(t, visibleStale, "records the zombie wrote after SIGCONT under its old generation that are visible read_committed")
	assert.Positive(t, hidden, "the zombie's open transaction held no outputs when it was stopped: the test did not exercise fencing")
}

func durOrNone(t, from time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return t.Sub(from).Round(time.Millisecond).String()
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// slogTime parses the time= field of a slog text line (zero when there is none).
func slogTime(line string) time.Time {
	const p = "time="
	i := strings.Index(line, p)
	if i < 0 {
		return time.Time{}
	}
	f := line[i+len(p):]
	if j := strings.IndexByte(f, ' '); j >= 0 {
		f = f[:j]
	}
	ts, err := time.Parse(time.RFC3339Nano, f)
	if err != nil {
		return time.Time{}
	}
	return ts
}

// javaHash is Java's String.hashCode, which Kafka uses to map a transactional id or a
// group id to its coordinator's partition.
func javaHash(s string) int32 {
	var h int32
	for _, c := range utf16.Encode([]rune(s)) {
		h = 31*h + int32(c)
	}
	return h
}

// coordinatorPartition is Utils.abs(id.hashCode) % n, as the broker computes it.
func coordinatorPartition(id string, n int) int32 {
	h := javaHash(id)
	if h == math.MinInt32 {
		h = 0
	} else if h < 0 {
		h = -h
	}
	return h % int32(n)
}

// TestEOSFaultBrokerKill: coordinator failover mid-transaction. One exactly-once worker (fixed transactional
// id) copies 36,000 records from 8 partitions while brokers are SIGKILLed in turn, each
// kept down 5 s and restarted: first the leader of its transaction coordinator's
// __transaction_state partition, then the group coordinator (or, when that is the same
// broker, another one). The cluster keeps the broker defaults (no fast transaction
// abort). Still exactly once: output == input, no duplicates, order kept, nothing
// aborted visible; and the worker keeps running.
func TestEOSFaultBrokerKill(t *testing.T) {
	harness.RequireFaultSuite(t)
	const (
		partitions = 8
		keys       = 800
		records    = 36_000
		perSec     = 450
		down       = 5 * time.Second
	)
	e := newEOSEnv(t, "eosbroker", partitions, false)
	logPath := harness.WorkerLog(t, "exactly-once worker log")
	live := harness.StartTopicReader(t, e.brokers, e.out, partitions, "read_committed")
	sp := harness.StartSeqProducer(t, e.brokers, e.in, partitions, keys, records, perSec)
	txnID := e.group + "-txn"
	w := e.startEOSWorker(logPath, "", "-txnid", txnID, "-v")
	restarts := 0
	alive := func() error {
		if !w.Running() {
			restarts++
			t.Errorf("eos-broker: the exactly-once worker ended by itself (%s); restarting it. Log tail:\n%s", harness.ExitDesc(w), harness.TailFile(logPath, 3000))
			if restarts > 3 {
				return fmt.Errorf("the exactly-once worker keeps failing")
			}
			w = e.startEOSWorker(logPath, "", "-txnid", txnID, "-v")
		}
		return nil
	}
	live.WaitSeen(t, 90*time.Second, w)

	type kill struct {
		broker      int32
		why         string
		at, back    time.Time
		firstAfter  time.Time
		longestGap  time.Duration
		outputsThen int
	}
	var kills []*kill
	for round := range 2 {
		time.Sleep(3 * time.Second)
		require.NoError(t, alive())
		groupCoord := harness.GroupCoordinator(e.ac, e.group)
		var target int32
		var why string
		if round == 0 {
			target, why = 2, "default (transaction coordinator not found)"
			if txnLeaders, err := harness.Leaders(e.ac, "__transaction_state"); err == nil && len(txnLeaders) > 0 {
				p := coordinatorPartition(txnID, len(txnLeaders))
				if l := txnLeaders[p]; l > 0 {
					target, why = l, fmt.Sprintf("leads __transaction_state[%d], the transaction coordinator of %q", p, txnID)
				}
			}
		} else {
			target, why = groupCoord, "the group coordinator"
			if target <= 0 || target == kills[0].broker {
				target, why = kills[0].broker%3+1, "another broker (the group coordinator was the first victim)"
			}
		}
		outLeaders, _ := harness.Leaders(e.ac, e.out)
		var ledOut []int32
		for p, l := range outLeaders {
			if l == target {
				ledOut = append(ledOut, p)
			}
		}
		slices.Sort(ledOut)
		k := &kill{broker: target, why: why, outputsThen: live.Count(), at: time.Now()}
		t.Logf("eos-broker: kill %d: broker %d (%s; it leads output partitions %v; group coordinator: broker %d) at +%s, %d outputs read_committed so far",
			round+1, target, why, ledOut, groupCoord, k.at.Sub(e.started).Round(time.Millisecond), k.outputsThen)
		require.NoError(t, e.k.KillBroker(target))
		time.Sleep(down)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := e.k.StartBroker(ctx, target)
		cancel()
		require.NoError(t, err, "restart broker %d", target)
		k.back = time.Now()
		kills = append(kills, k)
		// Let the cluster settle (leaders back, worker committing again) before the next kill.
		for settle := time.Now().Add(2 * time.Minute); ; {
			require.NoError(t, alive())
			if live.Count() > k.outputsThen && time.Since(k.back) > 5*time.Second {
				break
			}
			if time.Now().After(settle) {
				// Where is it stuck? A goroutine dump (SIGQUIT) lands in its log.
				_ = syscall.Kill(w.Pid(), syscall.SIGQUIT)
				time.Sleep(2 * time.Second)
				require.Fail(t, fmt.Sprintf("no new read_committed output within 2m of broker %d's restart (worker sent SIGQUIT: goroutines in its log)", target))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	inputs, outEnds := e.finishRun(sp, alive, func() []*harness.WorkerProc { return []*harness.WorkerProc{w} }, nil)
	v, _, _ := e.verify("eos-broker", inputs, outEnds, live, true)

	// The read_committed stall after each kill: the first arrival after it, and the
	// longest gap between arrivals from the kill until 30 s after the broker was back.
	var arrivals []time.Time
	for _, r := range live.Records() {
		arrivals = append(arrivals, r.Arrived)
	}
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].Before(arrivals[j]) })
	var figures []string
	for i, k := range kills {
		for j := 1; j < len(arrivals); j++ {
			if arrivals[j].After(k.at) && k.firstAfter.IsZero() {
				k.firstAfter = arrivals[j]
			}
			if arrivals[j].After(k.at) && arrivals[j-1].Before(k.back.Add(30*time.Second)) {
				from := arrivals[j-1]
				if from.Before(k.at) {
					from = k.at
				}
				k.longestGap = max(k.longestGap, arrivals[j].Sub(from))
			}
		}
		figures = append(figures, fmt.Sprintf("kill%d: broker=%d down=%s first_output_after_kill=%s longest_read_committed_gap=%s",
			i+1, k.broker, k.back.Sub(k.at).Round(time.Millisecond), durOrNone(k.firstAfter, k.at), k.longestGap.Round(time.Millisecond)))
	}
	aborts := harness.CountInFile(logPath, "aborting transaction")
	replaced := harness.CountInFile(logPath, "producer fenced; replacing it")
	t.Logf("eos-broker: records=%d %s %s worker_aborts=%d worker_producers_replaced=%d worker_restarts=%d total=%s",
		len(inputs), v, strings.Join(figures, " "), aborts, replaced, restarts, time.Since(e.started).Round(time.Millisecond))
	assert.Equal(t, records, len(inputs), "input records")
	assert.Zero(t, restarts, "the worker must survive a broker's crash (replication 3, min.insync.replicas 2): see its fatal error above")
}
