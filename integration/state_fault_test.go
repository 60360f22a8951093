package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
)

// State fault tests: exactly-once effects of a processor in Redis (state.Table with
// processor.WithCheckpoint) under worker crashes, a Redis outage and Redis restarted
// without persistence. The processor is integration/worker (-mode sum, -tags chaos) in its
// own OS process: the Kafka Streams EOS test's running sum per key, plus a count per key,
// in a Redis table. The input is deterministic (seeded int64 values over string keys,
// partition = key index mod partitions); after each run the test reads the input back,
// recomputes every key's sum and count and compares them with Redis (harness.SumTable):
// double_counts = Σ over keys of max(0, counted − records of the key), losses = Σ of
// max(0, records − counted), sum_mismatch = keys whose sum differs.
//
// Each test logs one greppable line of figures: "state-crash:" ("state-crash-out:" with
// outputs), "state-outage:", "state-nopersist:". They run in `make test-fault` and skip
// unless SAMSA_FAULT_TESTS=1.

// sfEnv is one state fault test's Redis, topic, group, table namespace and worker binary.
type sfEnv struct {
	t          *testing.T
	brokers    string
	redis      *stack.Redis
	bin        string // the chaos-built sum worker
	envBin     string // /usr/bin/env: sets $SAMSA_FAILPOINT and execs the worker (same PID)
	in, group  string
	ns         string
	partitions int
	probe      *harness.Probe
	sums       harness.SumTable
	args       []string // worker flags
}

// newSFEnv builds the sum worker (meanwhile getting the shared broker and starting the
// test's own redis-server with redisArgs) and creates the input topic.
func newSFEnv(t *testing.T, name string, partitions int, redisArgs ...string) *sfEnv {
	t.Helper()
	e := &sfEnv{t: t, partitions: partitions}
	dir := t.TempDir()
	harness.StartBuilt(t, func() (err error) { e.bin, err = harness.GoBuild(dir, "./worker", "chaos"); return err }, func() {
		e.brokers = stack.KafkaBrokers(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r, err := stack.StartRedis(ctx, stack.RedisOptions{Args: redisArgs})
		require.NoError(t, err, "start the test's own redis-server")
		t.Cleanup(func() { assert.NoError(t, r.Close()) })
		e.redis = r
	})
	e.envBin = harness.EnvBin(t)
	e.in, e.group = stack.UniqueName(name+"-in"), stack.UniqueName(name)
	e.ns = strings.ReplaceAll(stack.UniqueName(name), "-", ".")
	harness.CreateTopic(t, e.brokers, e.in, partitions, 1)
	e.probe = harness.NewHeldProbe(t, e.brokers, e.group, e.in, partitions)
	e.sums = harness.SumTable{TB: t, Addr: e.redis.Addr(), NS: e.ns, Topic: e.in, Partitions: partitions}
	e.args = []string{"-mode", "sum", "-brokers", e.brokers, "-redis", e.redis.Addr(), "-group", e.group, "-in", e.in, "-ns", e.ns,
		"-batch", "100", "-session", "6s", "-heartbeat", "1s", "-v"}
	return e
}

// start starts a sum worker with fail-point fp ("" for none), its output appended to
// logPath. startWorker SIGKILLs it by PID at the test's end if it still runs.
func (e *sfEnv) start(logPath, fp string) *harness.WorkerProc {
	e.t.Helper()
	args := append([]string{"SAMSA_FAILPOINT=" + fp, e.bin}, e.args...)
	return harness.StartWorker(e.t, e.envBin, logPath, args...)
}

func sfKey(i, keys int) string { return fmt.Sprintf("s%04d", i%keys) }

// sfValue is a splitmix64 of (seed, i), in [-1,000,000, 1,000,000].
func sfValue(seed uint64, i int) int64 {
	z := seed + uint64(i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return int64(z%2_000_001) - 1_000_000
}

// produce starts the deterministic input: record i has key sfKey(i, keys), partition
// (i mod keys) mod partitions and the int64 value sfValue(seed, i), paced at perSec and
// held before record limit until the test raises sp.Limit.
func (e *sfEnv) produce(keys, n, perSec int, seed uint64, limit int) *harness.SeqProducer {
	enc := codec.Int64()
	return harness.StartSeqProducerWith(e.t, e.brokers, e.in, e.partitions, keys, n, perSec, limit, func(i int) ([]byte, []byte) {
		v, _ := enc.Encode(sfValue(seed, i))
		return []byte(sfKey(i, keys)), v
	})
}

var sfSkippedRe = regexp.MustCompile(`skipped records already applied.* records=(\d+)`)

// sfSkippedLogged sums the records the processor logged as skipped (already applied) in
// path. The processor logs them when a partition's worker ends (revoke or clean stop), so
// a SIGKILLed worker's skips are not in its log.
func sfSkippedLogged(path string) int64 {
	b, _ := os.ReadFile(path)
	var n int64
	for _, m := range sfSkippedRe.FindAllStringSubmatch(string(b), -1) {
		x, _ := strconv.ParseInt(m[1], 10, 64)
		n += x
	}
	return n
}

// loadedWorker is one sum worker under a paced seeded load, with the committed progress
// sampled: the start and end of the Redis fault tests (an outage, a black hole).
type loadedWorker struct {
	e       *sfEnv
	w       *harness.WorkerProc
	sp      *harness.SeqProducer
	smp     *harness.CommitSampler // every 200 ms
	peakLag int64                  // input acknowledged but not committed, at most; read after smp.Stop
	logPath string
}

// startLoaded starts the producer and one sum worker (logged to logPath) and returns once
// the worker has committed something and worked 5 s more.
func (e *sfEnv) startLoaded(logPath string, keys, records, perSec int, seed uint64) *loadedWorker {
	t := e.t
	t.Helper()
	l := &loadedWorker{e: e, logPath: logPath}
	l.sp = e.produce(keys, records, perSec, seed, records)
	l.w = e.start(logPath, "")
	l.smp = harness.SampleCommits(t, e.probe, 200*time.Millisecond, 0, func(s harness.CommitSample) {
		l.peakLag = max(l.peakLag, l.sp.Acked.Load()-harness.Progress(s.Committed))
	})
	require.Eventually(t, func() bool {
		c, err := e.probe.Committed()
		return (err == nil && harness.Progress(c) > 0) || l.alive() != nil
	}, 90*time.Second, 100*time.Millisecond, "the worker committed nothing within 90s")
	require.NoError(t, l.alive())
	time.Sleep(5 * time.Second)
	require.NoError(t, l.alive())
	return l
}

func (l *loadedWorker) alive() error { return l.w.Alive() }

// through keeps the worker running for d (the fault, named what) and returns the highest
// offset committed per partition meanwhile.
func (l *loadedWorker) through(d time.Duration, what string) map[int32]int64 {
	maxDuring := map[int32]int64{}
	for from := time.Now(); time.Since(from) < d; {
		require.NoError(l.e.t, l.alive(), "the worker must keep running through the %s", what)
		if c, err := l.e.probe.Committed(); err == nil {
			for p, o := range c {
				maxDuring[p] = max(maxDuring[p], o)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return maxDuring
}

// beyond fails the test for every partition whose offset committed during the fault is
// beyond the table's applied offset, and counts them.
func (l *loadedWorker) beyond(maxDuring, applied map[int32]int64, what string) int {
	n := 0
	for p, c := range maxDuring {
		if c > applied[p] {
			n++
			l.e.t.Errorf("partition %d: committed offset %d during the %s is beyond the table's applied offset %d", p, c, what, applied[p])
		}
	}
	return n
}

// stateBack waits (up to 2 minutes from since) for a state write beyond applied.
func (l *loadedWorker) stateBack(ctx context.Context, applied map[int32]int64, since time.Time, what string) time.Duration {
	var took time.Duration
	require.Eventually(l.e.t, func() bool {
		a, err := l.e.sums.Applied(ctx)
		if err == nil && harness.Progress(a) > harness.Progress(applied) {
			took = time.Since(since)
			return true
		}
		return l.alive() != nil
	}, 2*time.Minute, 20*time.Millisecond, "no state write within 2m of %s", what)
	require.NoError(l.e.t, l.alive(), "the worker must recover by itself")
	return took
}

// finish waits for the input and for the commits to reach its end, stops the sampler
// and the worker (SIGTERM, exit 0), and checks the sums against the input read back.
func (l *loadedWorker) finish(ctx context.Context, records int) (harness.SumVerdict, []harness.CommitSample, int64) {
	t, e := l.e.t, l.e
	t.Helper()
	require.NoError(t, l.sp.Wait(3*time.Minute), "producing the input")
	ends := harness.EndOffsets(t, e.brokers, e.in, e.partitions)
	committed, ok := e.probe.WaitCommitted(t, ends, 3*time.Minute, l.alive)
	require.True(t, ok, "committed offsets %v never reached the end offsets %v", committed, ends)
	require.NoError(t, l.alive())
	samples := l.smp.Stop()
	code, exited := l.w.Signal(syscall.SIGTERM, time.Minute)
	require.True(t, exited, "sum worker %d did not exit within 1m of SIGTERM", l.w.Pid())
	assert.Equal(t, 0, code, "sum worker exit code after SIGTERM")
	v := e.sums.CheckSums(ctx, harness.ReadTopic(t, e.brokers, e.in, e.partitions, 2*time.Minute))
	v.AssertExact(t, records)
	return v, samples, l.peakLag
}

// Fail-points of the at-least-once mode (processor/pipeline.go).
const (
	fpBeforeProduce = "before-produce"     // after the handler (its Apply staged, not made), before outputs and offsets
	fpBeforeEffects = "alo-before-effects" // outputs acknowledged, state effects not made
	fpBeforeStore   = "alo-before-store"   // outputs acknowledged and effects made, offsets not stored
	killRandom      = "random"             // SIGKILL from the test at a random moment
	// Exactly-once: a transaction's state effects are made after it commits.
	fpEOSBeforeCommit  = "eos-before-commit"  // outputs and offsets sent, the transaction not committed
	fpEOSBeforeEffects = "eos-before-effects" // the transaction committed, its state effects not made
)

// crashSums is one SIGKILL loop of the sum worker (see TestStateFaultCrashSums).
type crashSums struct {
	tag     string   // prefix of the greppable log lines
	records int      // input records
	kinds   []string // one kill per entry: a fail-point or killRandom
	out     bool     // the worker sends each record's count to an output topic, checked against the table
	eos     bool     // the worker runs exactly-once (-eos), committing every 200 ms
}

// TestStateFaultCrashSums is Kafka Streams' EOS test pattern (a running sum per key, the
// worker killed and restarted) on samsa's at-least-once processor with a Redis table as
// its checkpoint. 50,000 seeded int64 values over 500 keys in 8 partitions are produced at
// 500 records/s while the sum worker is SIGKILLed 10 times: 4 times at the fail-point
// "before-produce" (its Apply is staged, its offsets are not stored), 3 times at
// "alo-before-store" (effects made, stored offsets not committed) and 3 times by the test
// at a random moment, each at a random hit count or delay (seeded; SAMSA_SEED replays),
// and restarted each time. Each worker is given fresh input (the producer never runs more than one
// eleventh of the input ahead of the kill loop), so every fail-point fires mid-stream.
//
// Between two lives the test compares the group's committed offsets with the table's
// applied offsets: the table is never behind the group (ahead = 0), and where it is ahead
// those records are applied but not committed, which the next worker must skip. At the end
// every key's sum and count in Redis equal the ones recomputed from the input read back
// from Kafka: double_counts = losses = sum_mismatch = 0.
func TestStateFaultCrashSums(t *testing.T) {
	harness.RequireFaultSuite(t)
	runCrashSums(t, crashSums{tag: "state-crash", records: 50_000, kinds: []string{
		fpBeforeProduce, fpBeforeProduce, fpBeforeProduce, fpBeforeProduce,
		fpBeforeStore, fpBeforeStore, fpBeforeStore, killRandom, killRandom, killRandom}})
}

// TestStateFaultCrashSumsOutputs is TestStateFaultCrashSums with outputs: the sum worker
// also sends each record's key's count after it to an output topic, in the same batch
// as its state update. 20,000 records; 8 kills: 3 at "alo-before-effects" (the batch's
// outputs acknowledged, its state effects not made: the crash between ack and apply), 2
// at "before-produce", 1 at "alo-before-store" and 2 at random. Besides the sums, each
// key's outputs must be exactly the counts 1..n, n being the table's count: no output
// lost (a gap), none for an effect never made (beyond n); repeats are allowed
// (at-least-once) and reported.
func TestStateFaultCrashSumsOutputs(t *testing.T) {
	harness.RequireFaultSuite(t)
	runCrashSums(t, crashSums{tag: "state-crash-out", records: 20_000, out: true, kinds: []string{
		fpBeforeEffects, fpBeforeEffects, fpBeforeEffects, fpBeforeProduce, fpBeforeProduce,
		fpBeforeStore, killRandom, killRandom}})
}

// TestStateFaultCrashSumsOutputsEOS is TestStateFaultCrashSumsOutputs in exactly-once
// mode, where a batch's state effects are made after the transaction that commits its
// outputs and offsets: 20,000 records, 8 kills: 3 at "eos-before-effects" (committed,
// effects not made: the next worker reads those records again and makes their effects,
// discarding their outputs), 2 at "eos-before-commit" (the transaction is aborted, no
// effects made), 1 at "before-produce" and 2 at random. Between two lives the table is
// never ahead of the group's commits (committed-but-not-applied is expected after an
// eos-before-effects kill, and reported). At the end the sums are exact and each key's
// read_committed outputs are exactly the counts 1..n, each once.
func TestStateFaultCrashSumsOutputsEOS(t *testing.T) {
	harness.RequireFaultSuite(t)
	runCrashSums(t, crashSums{tag: "state-crash-eos", records: 20_000, out: true, eos: true, kinds: []string{
		fpEOSBeforeEffects, fpEOSBeforeEffects, fpEOSBeforeEffects, fpEOSBeforeCommit, fpEOSBeforeCommit,
		fpBeforeProduce, killRandom, killRandom}})
}

func runCrashSums(t *testing.T, c crashSums) {
	const (
		partitions = 8
		keys       = 500
		perSec     = 500
	)
	records, kills, tag := c.records, len(c.kinds), c.tag
	start := time.Now()
	seed := harness.Seed(t)
	t.Logf("%s: seed=%d (set SAMSA_SEED to replay)", tag, seed)
	rng := rand.New(rand.NewPCG(seed, 17))
	e := newSFEnv(t, "sf"+strings.ReplaceAll(tag, "-", ""), partitions)
	var out string
	if c.out {
		out = stack.UniqueName("sfout")
		harness.CreateTopic(t, e.brokers, out, partitions, 1)
		e.args = append(e.args, "-out", out)
	}
	if c.eos {
		e.args = append(e.args, "-eos", "-commit", "200ms")
	}
	logPath := harness.WorkerLog(t, "sum worker")
	t.Logf("%s: setup (build, Redis, topic) took %s", tag, time.Since(start).Round(time.Millisecond))

	kinds := slices.Clone(c.kinds)
	// A fail-point fires at a hit count ≤ maxHit, within one chunk of input (see chunk):
	// a chunk holds ≥ maxHit+5 batches of ≤ 100 records.
	maxHit := records/(kills+1)/100 - 5
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	chunk := func(k int) int { return records * (k + 1) / (kills + 1) }
	sp := e.produce(keys, records, perSec, seed, chunk(0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	appliedTotal := func() int64 {
		a, err := e.sums.Applied(ctx)
		if err != nil {
			return -1
		}
		return harness.Progress(a)
	}
	var (
		windows   []int64
		totalWin  int64
		ahead     int
		killsBy   = map[string]int{}
		lastWin   int64
		lifetimes []time.Duration
		// Lives that applied new records before their kill, and how many the last one did.
		appliedLives int
		newApplied   int64
	)
	for k := range kills {
		sp.Limit.Store(int64(max(chunk(k), int(sp.Limit.Load()))))
		kind := kinds[k]
		fp := ""
		if kind != killRandom {
			hit := 3 + rng.IntN(maxHit-2) // a chunk is ≥ maxHit+5 batches of ≤ 100
			if strings.HasPrefix(kind, "eos-") {
				// Hit once per commit with work (every 200 ms while there is some): a worker
				// assigned after the last one's session expired (6 s) finds its chunk
				// produced already and may commit all of it in one transaction, so only the
				// first hit is sure to come.
				hit = 1
			}
			fp = fmt.Sprintf("%s:%d", kind, hit)
		}
		base := appliedTotal()
		w := e.start(logPath, fp)
		t0 := time.Now()
		if kind == killRandom {
			// Wait until this worker applies something, then kill it 0.3-2.5 s later.
			for {
				require.True(t, w.Running(), "sum worker %d (life %d) exited by itself: %s", w.Pid(), k+1, harness.TailFile(logPath, 2000))
				if a := appliedTotal(); a > base {
					break
				}
				require.Less(t, time.Since(t0), 90*time.Second, "sum worker %d applied nothing within 90s of its start", w.Pid())
				time.Sleep(50 * time.Millisecond)
			}
			delay := 300*time.Millisecond + time.Duration(rng.Int64N(int64(2200*time.Millisecond)))
			time.Sleep(delay)
			require.True(t, w.Running(), "sum worker %d exited by itself", w.Pid())
			_, ok := w.Signal(syscall.SIGKILL, 30*time.Second)
			require.True(t, ok, "sum worker %d survived SIGKILL", w.Pid())
			fp = "delay " + delay.Round(time.Millisecond).String() + " after its first apply"
		} else {
			select {
			case <-w.Done():
			case <-time.After(2 * time.Minute):
				t.Fatalf("fail-point %s did not fire within 2m of the worker's start", fp)
			}
			require.True(t, harness.KilledBy(w, syscall.SIGKILL), "sum worker %d (fail-point %s) exited with %v, not by its fail-point's SIGKILL", w.Pid(), fp, w.State)
		}
		lived := time.Since(t0)
		lifetimes = append(lifetimes, lived)
		if a := appliedTotal(); a > base {
			appliedLives++ // this life applied new records (not only skipped replayed ones)
			newApplied = a - base
		} else {
			newApplied = 0
		}
		killsBy[kind]++
		// Nothing runs now: compare what the group committed with what the table applied.
		committed := e.probe.CommittedRetry(e.t)
		applied, err := e.sums.Applied(ctx)
		require.NoError(t, err, "applied offsets after kill %d", k+1)
		win, ah := harness.SumWindow(committed, applied)
		windows = append(windows, win)
		totalWin += win
		lastWin = win
		ahead += ah
		t.Logf("%s: kill %d/%d: %-16s (%s) pid %d lived %s, applied %d new records; then committed %d, applied %d: %d records applied but not committed (the next worker skips them), %d partitions committed beyond the table; %d produced",
			tag, k+1, kills, kind, fp, w.Pid(), lived.Round(time.Millisecond), newApplied, harness.Progress(committed), harness.Progress(applied), win, ah, sp.Produced.Load())
	}

	// The last worker gets the rest of the input and finishes it.
	sp.Limit.Store(int64(records))
	w := e.start(logPath, "")
	require.NoError(t, sp.Wait(4*time.Minute), "producing the input")
	ends := harness.EndOffsets(t, e.brokers, e.in, partitions)
	committed, ok := e.probe.WaitCommitted(t, ends, 3*time.Minute, w.Alive)
	require.True(t, ok, "committed offsets %v never reached the end offsets %v", committed, ends)
	drained := time.Since(start)
	code, exited := w.Signal(syscall.SIGTERM, time.Minute)
	require.True(t, exited, "sum worker %d did not exit within 1m of SIGTERM", w.Pid())
	assert.Equal(t, 0, code, "sum worker exit code after SIGTERM")

	inputs := harness.ReadTopic(t, e.brokers, e.in, partitions, 2*time.Minute)
	v := e.sums.CheckSums(ctx, inputs)
	applied, err := e.sums.Applied(ctx)
	require.NoError(t, err)
	for p, end := range ends {
		assert.Equal(t, end, applied[p], "partition %d: the table's applied offset is the end offset", p)
	}
	fired := map[string]int{}
	for _, fp := range []string{fpBeforeProduce, fpBeforeEffects, fpBeforeStore, fpEOSBeforeCommit, fpEOSBeforeEffects} {
		fired[fp] = harness.CountInFile(logPath, "failpoint: SIGKILL at "+fp)
	}
	skippedLogged := sfSkippedLogged(logPath)
	already := harness.CountInFile(logPath, "worker: batch already applied")
	conflicts := harness.CountInFile(logPath, "worker: state conflict")
	retried := harness.CountInFile(logPath, "batch failed, retrying")
	t.Logf("%s: seed=%d kills=%d (before-produce=%d alo-before-effects=%d alo-before-store=%d random=%d; fail-point lines before-produce=%d alo-before-effects=%d alo-before-store=%d) %s lives_that_applied_new_records=%d/%d applied_not_committed_at_kills=%d (per kill %v) committed_beyond_table=%d skipped_by_last_worker_logged=%d (last kill's window %d) already_applied_batches=%d state_conflicts=%d batch_retries=%d lifetimes=%v drained=%s total=%s",
		tag, seed, kills, killsBy[fpBeforeProduce], killsBy[fpBeforeEffects], killsBy[fpBeforeStore], killsBy[killRandom],
		fired[fpBeforeProduce], fired[fpBeforeEffects], fired[fpBeforeStore],
		v, appliedLives, kills, totalWin, windows, ahead, skippedLogged, lastWin, already, conflicts, retried, roundAll(lifetimes), drained.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	v.AssertExact(t, records)
	assert.Equal(t, keys, v.Keys, "input keys")
	assert.Equal(t, 2*keys, v.DataKeys, "data keys in the table (a sum and a count per key)")
	if c.eos {
		// Effects follow the commit: the table is never ahead of it; behind it only with
		// effects owed (made by the next worker).
		assert.Zero(t, totalWin, "records applied but not committed between two lives (exactly-once makes effects after the commit)")
		t.Logf("%s: partitions committed beyond the table between lives (effects owed to the next worker): %d; eos-before-commit=%d eos-before-effects=%d fail-point lines", tag, ahead, fired[fpEOSBeforeCommit], fired[fpEOSBeforeEffects])
	} else {
		assert.Zero(t, ahead, "partitions whose committed offset was beyond the table's applied offset between two lives")
	}
	for _, fp := range []string{fpBeforeProduce, fpBeforeEffects, fpBeforeStore, fpEOSBeforeCommit, fpEOSBeforeEffects} {
		assert.Equal(t, killsBy[fp], fired[fp], "%s kills", fp)
	}
	assert.Zero(t, conflicts, "state conflicts (ErrFenced/ErrStateLost) with one writer at a time and a persistent Redis")
	if c.out {
		ov := e.sums.CheckOutputs(ctx, e.brokers, out, inputs, c.eos)
		t.Logf("%s: outputs: %s", tag, ov)
		if c.eos {
			assert.Zero(t, ov.Repeats, "counts sent twice under read_committed")
		}
		assert.Zero(t, ov.Gaps, "counts never sent (outputs lost)")
		assert.Zero(t, ov.Beyond, "counts sent beyond the table's (outputs of effects never made)")
		assert.Equal(t, keys, ov.Keys, "keys with outputs")
	}
}

func roundAll(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Millisecond).String()
	}
	return out
}

// TestStateFaultRedisOutage: Redis (AOF, appendfsync always) is SIGKILLed under load for
// 20 s and restarted on the same port and data dir, while one sum worker keeps running (its
// error policy, Retry(1000, ≤1 s backoff) then Stop, waits the outage out). During the
// outage the group commits no offset the table has not applied (committed ≤ applied for
// every partition); after it, the same worker process recovers by itself, the committed
// offsets reach the end, and every key's sum and count are exact. Reported: how long the
// commits stood still, the recovery time after Redis answered again (first state write,
// first commit), the lag peak, and the retries logged.
func TestStateFaultRedisOutage(t *testing.T) {
	harness.RequireFaultSuite(t)
	const (
		records    = 30_000
		partitions = 8
		keys       = 500
		perSec     = 600
		outage     = 20 * time.Second
	)
	start := time.Now()
	seed := harness.Seed(t)
	e := newSFEnv(t, "sfoutage", partitions, "--appendonly", "yes", "--appendfsync", "always")
	logPath := harness.WorkerLog(t, "sum worker")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l := e.startLoaded(logPath, keys, records, perSec, seed)
	pid := l.w.Pid()

	killed := time.Now()
	require.NoError(t, e.redis.Kill(), "SIGKILL redis-server")
	producedAtKill := l.sp.Acked.Load()
	maxDuring := l.through(outage, "outage")
	require.NoError(t, e.redis.Restart(ctx), "restart redis-server on the same port")
	back := time.Now()
	appliedBack, err := e.sums.Applied(ctx)
	require.NoError(t, err, "read the applied offsets right after the restart")
	// Nothing was committed that the table does not hold (appendfsync always: the table
	// holds every acknowledged Apply, and applied offsets only grow).
	beyond := l.beyond(maxDuring, appliedBack, "outage")
	stateBack := l.stateBack(ctx, appliedBack, back, "Redis's return")

	v, samples, peakLag := l.finish(ctx, records)
	require.Equal(t, pid, l.w.Pid(), "same worker process")
	// Commits during the outage: the last change of progress before Redis came back, and
	// the first change after it.
	var plateau int64
	var lastMoveBefore time.Time
	var commitBack time.Duration
	for i, s := range samples {
		if s.At.After(back) {
			break
		}
		if i > 0 && harness.Progress(s.Committed) != harness.Progress(samples[i-1].Committed) {
			lastMoveBefore = s.At
		}
		plateau = harness.Progress(s.Committed)
	}
	for _, s := range samples {
		if s.At.After(back) && harness.Progress(s.Committed) > plateau {
			commitBack = s.At.Sub(back)
			break
		}
	}
	retries := harness.CountInFile(logPath, "batch failed, retrying")
	conflicts := harness.CountInFile(logPath, "worker: state conflict")
	already := harness.CountInFile(logPath, "worker: batch already applied")
	commitsAfterKill := "none"
	if lastMoveBefore.After(killed) {
		commitsAfterKill = lastMoveBefore.Sub(killed).Round(time.Millisecond).String()
	}
	t.Logf("state-outage: seed=%d redis=aof-always kill=SIGKILL outage=%s %s committed_beyond_table=%d last_commit_after_kill=%s commits_stalled=%s state_writes_resumed=%s commits_resumed=%s (after Redis answered PING) lag_peak=%d records_acked_at_kill=%d batch_retries_logged=%d already_applied_batches=%d state_conflicts=%d same_process=%t total=%s",
		seed, outage, v, beyond, commitsAfterKill, durSince(lastMoveBefore, back.Add(commitBack)), stateBack.Round(time.Millisecond),
		commitBack.Round(time.Millisecond), peakLag, producedAtKill, retries, already, conflicts, pid == l.w.Pid(), time.Since(start).Round(time.Millisecond))
	assert.Zero(t, conflicts, "state conflicts with appendfsync always")
	assert.Positive(t, retries, "the worker retried batches during the outage")
	assert.NotZero(t, commitBack, "commits resumed after the outage")
}

func durSince(from, to time.Time) string {
	if from.IsZero() || to.Before(from) {
		return "n/a"
	}
	return to.Sub(from).Round(time.Millisecond).String()
}

// TestStateFaultRedisNoPersistence: Redis restarts without persistence under a running
// processor. The first half of the input is applied and committed, Redis is SIGKILLed
// and restarted empty, and the second half arrives.
//
//   - The running worker's Table saw the applied offsets that are now gone: its Applies
//     fail with ErrStateLost, the retries fail the same way, nothing is committed.
//   - A restart of the worker (what a supervisor does) reads Applied = 0 from the empty
//     table, while the group's last commits recorded the offsets the table had applied:
//     the processor refuses to resume (ErrCheckpointBehind, naming the partitions), so
//     nothing diverges silently and nothing more is committed.
func TestStateFaultRedisNoPersistence(t *testing.T) {
	harness.RequireFaultSuite(t)
	const (
		records    = 20_000
		first      = 10_000
		partitions = 8
		keys       = 500
		perSec     = 2000
	)
	start := time.Now()
	seed := harness.Seed(t)
	e := newSFEnv(t, "sfnopersist", partitions) // the launcher's default: no persistence
	log1, log2 := harness.WorkerLog(t, "sum worker-1"), harness.WorkerLog(t, "sum worker-2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	sp := e.produce(keys, records, perSec, seed, first)
	w := e.start(log1, "")
	for sp.Acked.Load() < first {
		require.True(t, w.Running(), "sum worker exited by itself")
		require.Less(t, time.Since(start), 3*time.Minute, "the first half was not acknowledged within 3m")
		time.Sleep(50 * time.Millisecond)
	}
	half := harness.EndOffsets(t, e.brokers, e.in, partitions)
	_, ok := e.probe.WaitCommitted(t, half, 2*time.Minute, w.Alive)
	require.True(t, ok, "the first half was not committed within 2m")
	appliedBefore, err := e.sums.Applied(ctx)
	require.NoError(t, err)

	require.NoError(t, e.redis.Kill())
	time.Sleep(3 * time.Second)
	require.NoError(t, e.redis.Restart(ctx))
	back := time.Now()
	appliedAfter, err := e.sums.Applied(ctx)
	require.NoError(t, err)
	sp.Limit.Store(records)

	// The running worker: wait for its first conflict, then watch it for 10 s more.
	var firstConflict time.Duration
	for firstConflict == 0 && time.Since(back) < time.Minute {
		if harness.CountInFile(log1, "worker: state conflict") > 0 {
			firstConflict = time.Since(back)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(10 * time.Second)
	committedStuck := e.probe.CommittedRetry(e.t)
	lostConflicts := harness.CountInFile(log1, "kind=lost")
	fencedConflicts := harness.CountInFile(log1, "kind=fenced")
	stillRunning := w.Running()
	advanced := harness.Progress(committedStuck) - harness.Progress(half)
	t.Logf("state-nopersist: running worker after Redis came back empty: first ErrStateLost after %s, %d conflict lines (kind=lost %d, kind=fenced %d) in %s, committed offsets advanced by %d records, still running=%t (retrying)",
		durOrNA(firstConflict), harness.CountInFile(log1, "worker: state conflict"), lostConflicts, fencedConflicts, time.Since(back).Round(time.Millisecond), advanced, stillRunning)

	// A supervisor restarts it.
	if stillRunning {
		_, killedOK := w.Signal(syscall.SIGKILL, 30*time.Second)
		require.True(t, killedOK, "sum worker survived SIGKILL")
	}
	w2 := e.start(log2, "")
	require.NoError(t, sp.Wait(3*time.Minute), "producing the input")
	restarted := time.Now()
	for w2.Running() && time.Since(restarted) < 2*time.Minute {
		time.Sleep(100 * time.Millisecond)
	}
	require.False(t, w2.Running(), "the restarted sum worker resumed on the emptied table (it ran 2m without refusing)")
	detected := time.Since(restarted)
	refusals := harness.CountInFile(log2, "checkpoint is behind what the group's commits recorded")
	committedAfter := e.probe.CommittedRetry(e.t)
	t.Logf("state-nopersist: seed=%d applied_before_kill=%d applied_after_restart=%d committed_at_kill=%d; restarted worker exited (%v) %s after the input was complete, %d refusal lines; committed advanced by %d records after the restart; total=%s",
		seed, harness.Progress(appliedBefore), harness.Progress(appliedAfter), harness.Progress(half), w2.State, detected.Round(time.Millisecond), refusals,
		harness.Progress(committedAfter)-harness.Progress(committedStuck), time.Since(start).Round(time.Millisecond))
	assert.NotZero(t, w2.State.ExitCode(), "the restarted worker exits with an error")
	assert.Positive(t, refusals, "the worker's error says the checkpoint is behind the group's commits")
	assert.Equal(t, harness.Progress(committedStuck), harness.Progress(committedAfter), "nothing committed on the emptied table")
}

func durOrNA(d time.Duration) string {
	if d == 0 {
		return "n/a (none within 1m)"
	}
	return d.Round(time.Millisecond).String()
}
