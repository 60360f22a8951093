package integration

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/stack"
)

// Exactly-once fault tests (crash loop, fenced zombie, broker kills) on a three-node KRaft
// cluster (replication 3, min.insync.replicas 2) that each test starts for itself. The
// processor runs as integration/worker (-mode copy -eos), built with -tags chaos, in its own OS process,
// so it can be SIGKILLed at the framework's fail-points, SIGSTOPped and restarted. A
// read_committed reader in the test process follows the output while the faults happen;
// at the end, once every transaction is finished (read_committed end == high watermark on
// every output partition, as EosTestDriver.verifyAllTransactionFinished), fresh
// read_committed and read_uncommitted readers read everything, and the checker demands:
//
//   - output == input exactly: every input (partition, offset, key, value) has exactly one
//     output, nothing else is there (lost = dups = unexpected = 0);
//   - order: within each output partition, the outputs of each input partition are in
//     input offset order, and every key's values are in input order;
//   - a running sum per key over the read_committed output equals the one recomputed
//     from the input;
//   - aborted_visible = 0: no read_committed record is a copy that the
//     read_uncommitted log shows was written again later (a copy is rewritten only when
//     the transaction holding it did not commit; all copies of an input share its key,
//     hence one output partition, so the log order there is the write order).
//
// Each test logs one greppable line of figures: "eos-crash:", "eos-zombie:", "eos-broker:".
// They are long: they run in `make test-fault` and skip unless SAMSA_FAULT_TESTS=1.

// requireFaultSuite skips the long fault tests unless SAMSA_FAULT_TESTS=1.
func requireFaultSuite(t *testing.T) {
	t.Helper()
	if os.Getenv("SAMSA_FAULT_TESTS") != "1" {
		t.Skip("long fault suite (own three-broker Kafka cluster, several minutes): runs in `make test-fault`; set SAMSA_FAULT_TESTS=1 to run it here")
	}
	requireReal(t)
}

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
	return newEOSCluster(t, name, fastAbort).withTopics(t, name, partitions)
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
	built := make(chan error, 1)
	dir := t.TempDir()
	go func() {
		var err error
		e.bin, err = buildEOSWorker(dir)
		built <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	props := map[string]string{}
	if fastAbort {
		props["transaction.abort.timed.out.transaction.cleanup.interval.ms"] = "1000"
	}
	k, err := stack.StartKafka(ctx, stack.KafkaOptions{Brokers: 3, Props: props})
	require.NoError(t, err, "start the three-node cluster")
	t.Cleanup(func() { k.Close() })
	require.NoError(t, <-built)
	e.k, e.brokers = k, k.Bootstrap()
	t.Logf("%s: three-node cluster ready and exactly-once worker built in %s", name, time.Since(e.started).Round(time.Millisecond))
	e.envBin, err = exec.LookPath("env")
	require.NoError(t, err, "the tests start the worker through env(1) to set its fail-point")
	e.ac = newAdmin(t, e.brokers)
	return e
}

// withTopics returns a copy of e for test t with fresh input and output topics
// (replication 3) and group.
func (e *eosEnv) withTopics(t *testing.T, name string, partitions int) *eosEnv {
	t.Helper()
	c := *e
	c.t, c.partitions = t, partitions
	c.in, c.out, c.group = stack.UniqueName(name+"-in"), stack.UniqueName(name+"-out"), stack.UniqueName(name)
	createTopic(t, c.brokers, c.in, partitions, 3)
	createTopic(t, c.brokers, c.out, partitions, 3)
	return &c
}

// buildEOSWorker compiles integration/worker (-mode copy -eos) with the chaos tag (fail-points in)
// into dir.
func buildEOSWorker(dir string) (string, error) { return goBuild(dir, "./worker", "chaos") }

// startEOSWorker starts an exactly-once worker process with fail-point fp ("" for none) and extra
// flags, its output appended to logPath. It is SIGKILLed by PID at the test's end if it
// still runs (startWorker's cleanup).
func (e *eosEnv) startEOSWorker(logPath, fp string, extra ...string) *workerProc {
	e.t.Helper()
	args := []string{"SAMSA_FAILPOINT=" + fp, e.bin, "-mode", "copy", "-eos", "-brokers", e.brokers, "-group", e.group, "-in", e.in, "-out", e.out}
	args = append(append(args, eosWorkerArgs...), extra...)
	return startWorker(e.t, e.envBin, logPath, args...)
}

// logOnFailure logs the tail of a worker log when t fails, and keeps the whole log in
// $SAMSA_FAULT_LOGS (default: the system temp dir) for the post-mortem; with
// SAMSA_KEEP_LOGS=1 it keeps it when t passes too.
func logOnFailure(t *testing.T, name, path string) {
	t.Cleanup(func() {
		if !t.Failed() && os.Getenv("SAMSA_KEEP_LOGS") != "1" {
			return
		}
		if t.Failed() {
			t.Logf("--- %s tail:\n%s", name, tailFile(path, 6000))
		}
		dir := os.Getenv("SAMSA_FAULT_LOGS")
		if dir == "" {
			dir = os.TempDir()
		}
		if data, err := os.ReadFile(path); err == nil {
			keep := filepath.Join(dir, fmt.Sprintf("%s-%s-%d.log", strings.ReplaceAll(t.Name(), "/", "_"), strings.ReplaceAll(name, " ", "_"), time.Now().UnixNano()))
			if err := os.WriteFile(keep, data, 0o644); err == nil {
				t.Logf("--- whole %s log kept in %s", name, keep)
			}
		}
	})
}

// listEnds returns the end offset of each partition of topic at isolation level iso: the
// high watermark (read_uncommitted) or the last stable offset (read_committed).
func listEnds(ac *kafka.AdminClient, topic string, partitions int, iso kafka.IsolationLevel) (map[int32]int64, error) {
	req := make(map[kafka.TopicPartition]kafka.OffsetSpec, partitions)
	for p := range int32(partitions) {
		req[kafka.TopicPartition{Topic: &topic, Partition: p}] = kafka.LatestOffsetSpec
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := ac.ListOffsets(ctx, req, kafka.SetAdminIsolationLevel(iso))
	if err != nil {
		return nil, err
	}
	out := make(map[int32]int64, partitions)
	for tp, info := range res.ResultInfos {
		if info.Error.Code() != kafka.ErrNoError {
			return nil, fmt.Errorf("%s[%d]: %v", topic, tp.Partition, info.Error)
		}
		out[tp.Partition] = int64(info.Offset)
	}
	return out, nil
}

// waitTxnsFinished waits until no transaction is open on topic: the read_committed end
// (last stable offset) equals the high watermark on every partition
// (EosTestDriver.verifyAllTransactionFinished). It returns those ends. Each attempt uses
// a fresh admin client: after a broker restart a long-lived one can keep sending a stale
// leader epoch and get FENCED_LEADER_EPOCH until its metadata refreshes (5 min).
func waitTxnsFinished(t *testing.T, brokers, topic string, partitions int, timeout time.Duration) map[int32]int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lso, hw map[int32]int64
	var err error
	for {
		var ac *kafka.AdminClient
		if ac, err = kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3}); err == nil {
			if hw, err = listEnds(ac, topic, partitions, kafka.IsolationLevelReadUncommitted); err == nil {
				if lso, err = listEnds(ac, topic, partitions, kafka.IsolationLevelReadCommitted); err == nil {
					hw2, err2 := listEnds(ac, topic, partitions, kafka.IsolationLevelReadUncommitted)
					if err2 == nil && len(lso) == partitions && mapsEqual(lso, hw) && mapsEqual(hw, hw2) {
						ac.Close()
						return hw
					}
				}
			}
			ac.Close()
		}
		require.True(t, time.Now().Before(deadline), "transactions on %s still open after %s: last stable offsets %v, high watermarks %v (err %v)", topic, timeout, lso, hw, err)
		time.Sleep(200 * time.Millisecond)
	}
}

func mapsEqual(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// txnRec is an output record read back, with its timestamp (the writer's CreateTime) and
// when the reader received it.
type txnRec struct {
	rec
	Timestamp time.Time
	Arrived   time.Time
}

// outFields splits an exactly-once worker output value: input value, partition, offset, writer pid.
func (r txnRec) fields() (value string, partition int32, offset int64, writer string, ok bool) {
	f := strings.SplitN(string(r.Value), "|", 4)
	if len(f) != 4 {
		return "", 0, 0, "", false
	}
	p, err1 := strconv.Atoi(f[1])
	o, err2 := strconv.ParseInt(f[2], 10, 64)
	return f[0], int32(p), o, f[3], err1 == nil && err2 == nil
}

func (r txnRec) writer() string {
	_, _, _, w, _ := r.fields()
	return w
}

func plainRecs(rs []txnRec) []rec {
	out := make([]rec, len(rs))
	for i := range rs {
		out[i] = rs[i].rec
	}
	return out
}

// topicReader reads every partition of a topic from the beginning, at one isolation
// level, on its own goroutine, until stopped: the "during the faults" reader, and (run to
// given ends) the final one. It records when it first saw each writer's output and the
// fetch position of every partition (which passes transaction markers).
type topicReader struct {
	c          *kafka.Consumer
	topic      string
	partitions int
	quit, done chan struct{}

	mu        sync.Mutex
	byPart    [][]txnRec
	pos       map[int32]int64
	firstSeen map[string]time.Time // writer pid -> first arrival of one of its records
	lastSeen  map[string]time.Time // writer pid -> last arrival of one of its records
	errs      []string
}

func startTopicReader(t *testing.T, brokers, topic string, partitions int, isolation string) *topicReader {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":  brokers,
		"group.id":           stack.UniqueName("eos-reader"),
		"enable.auto.commit": false,
		"auto.offset.reset":  "earliest",
		"isolation.level":    isolation,
		"fetch.wait.max.ms":  100,
		"log_level":          3,
	})
	require.NoError(t, err)
	tps := make([]kafka.TopicPartition, partitions)
	for p := range partitions {
		tps[p] = kafka.TopicPartition{Topic: &topic, Partition: int32(p), Offset: kafka.OffsetBeginning}
	}
	require.NoError(t, c.Assign(tps))
	r := &topicReader{c: c, topic: topic, partitions: partitions, quit: make(chan struct{}), done: make(chan struct{}),
		byPart: make([][]txnRec, partitions), pos: map[int32]int64{}, firstSeen: map[string]time.Time{}, lastSeen: map[string]time.Time{}}
	go r.run(tps)
	t.Cleanup(r.stop)
	return r
}

func (r *topicReader) run(tps []kafka.TopicPartition) {
	defer close(r.done)
	lastPos := time.Time{}
	for {
		select {
		case <-r.quit:
			return
		default:
		}
		switch ev := r.c.Poll(100).(type) {
		case *kafka.Message:
			if ev.TopicPartition.Error != nil {
				r.mu.Lock()
				r.errs = append(r.errs, ev.TopicPartition.Error.Error())
				r.mu.Unlock()
				continue
			}
			m := txnRec{rec: rec{Partition: ev.TopicPartition.Partition, Offset: int64(ev.TopicPartition.Offset), Key: ev.Key, Value: ev.Value},
				Timestamp: ev.Timestamp, Arrived: time.Now()}
			w := m.writer()
			r.mu.Lock()
			r.byPart[m.Partition] = append(r.byPart[m.Partition], m)
			if _, ok := r.firstSeen[w]; !ok {
				r.firstSeen[w] = m.Arrived
			}
			r.lastSeen[w] = m.Arrived
			r.mu.Unlock()
		case kafka.Error:
			r.mu.Lock()
			r.errs = append(r.errs, ev.Error())
			r.mu.Unlock()
		}
		if time.Since(lastPos) > 100*time.Millisecond {
			lastPos = time.Now()
			if pos, err := r.c.Position(tps); err == nil {
				r.mu.Lock()
				for _, p := range pos {
					if p.Offset >= 0 {
						r.pos[p.Partition] = int64(p.Offset)
					}
				}
				r.mu.Unlock()
			}
		}
	}
}

func (r *topicReader) stop() {
	select {
	case <-r.quit:
		return
	default:
	}
	close(r.quit)
	<-r.done
	r.c.Close()
}

// latest returns when the reader last received a record written by writer.
func (r *topicReader) latest(writer string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastSeen[writer]
}

// seen returns when the reader first received a record written by writer.
func (r *topicReader) seen(writer string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.firstSeen[writer]
	return at, ok
}

func (r *topicReader) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rs := range r.byPart {
		n += len(rs)
	}
	return n
}

// records returns what was read, partition by partition in offset order.
func (r *topicReader) records() []txnRec {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []txnRec
	for _, rs := range r.byPart {
		out = append(out, rs...)
	}
	return out
}

// waitEnds waits until the reader's position reached ends on every partition.
func (r *topicReader) waitEnds(t *testing.T, ends map[int32]int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		done := true
		for p, e := range ends {
			if r.pos[p] < e {
				done = false
			}
		}
		pos := maps2str(r.pos)
		errs := slices.Clone(r.errs)
		r.mu.Unlock()
		if done {
			return
		}
		require.True(t, time.Now().Before(deadline), "reading %s: positions %s, ends %s after %s (errors: %v)", r.topic, pos, maps2str(ends), timeout, errs)
		time.Sleep(100 * time.Millisecond)
	}
}

func maps2str(m map[int32]int64) string {
	keys := make([]int32, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%d:%d ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

// readTxnTopic reads topic to ends at isolation level iso with a fresh consumer.
func readTxnTopic(t *testing.T, brokers, topic string, partitions int, iso string, ends map[int32]int64) []txnRec {
	t.Helper()
	r := startTopicReader(t, brokers, topic, partitions, iso)
	r.waitEnds(t, ends, 2*time.Minute)
	r.stop()
	return r.records()
}

// eosVerdict is the checker's result for one read_committed view of the output.
type eosVerdict struct {
	seq             seqTally // by key and value, with per-key order (checker_test.go)
	Outputs         int
	Lost            int // inputs (partition, offset) without output
	Dups            int // Σ(count−1) over inputs
	Unexpected      int // outputs naming no input, or unparsable
	Mismatched      int // outputs naming an input but with another key or value
	PartitionOrder  int // an input partition's outputs not in offset order within an output partition
	SumMismatch     int // keys whose running sums differ from the input's
	AbortedVisible  int // read_committed records that the read_uncommitted log shows were rewritten later
	NotInLog        int // read_committed records absent from the read_uncommitted view
	ReadUncommitted int
	Aborted         int // read_uncommitted records not visible read_committed
}

func (v eosVerdict) String() string {
	return fmt.Sprintf("outputs=%d lost=%d dups=%d unexpected=%d mismatched=%d partition_order_violations=%d key_order_violations=%d sum_mismatch=%d aborted_visible=%d read_uncommitted=%d aborted_records=%d",
		v.Outputs, v.Lost, v.Dups, v.Unexpected, v.Mismatched, v.PartitionOrder, v.seq.OrderViolations, v.SumMismatch, v.AbortedVisible, v.ReadUncommitted, v.Aborted)
}

// checkEOS compares a read_committed view of the output with the input. ru is the
// read_uncommitted view; with lastCopy, a read_committed record that is not the last
// copy of its input in ru counts as aborted_visible (valid when writers never overlap in
// time: one worker at a time, each killed and gone before the next starts).
func checkEOS(inputs []rec, rc, ru []txnRec, lastCopy bool) eosVerdict {
	v := eosVerdict{seq: tallySeq(inputs, plainRecs(rc)), Outputs: len(rc), ReadUncommitted: len(ru)}
	type at struct {
		p int32
		o int64
	}
	in := make(map[at]rec, len(inputs))
	for _, r := range inputs {
		in[at{r.Partition, r.Offset}] = r
	}
	count := make(map[at]int, len(inputs))
	lastPerPart := map[[2]int32]int64{} // (output partition, input partition) -> last input offset
	keySum := map[string][]int64{}
	for _, r := range rc {
		val, p, o, _, ok := r.fields()
		if !ok {
			v.Unexpected++
			continue
		}
		src, ok := in[at{p, o}]
		if !ok {
			v.Unexpected++
			continue
		}
		if string(src.Key) != string(r.Key) || string(src.Value) != val {
			v.Mismatched++
		}
		count[at{p, o}]++
		k := [2]int32{r.Partition, p}
		if last, ok := lastPerPart[k]; ok && o <= last {
			v.PartitionOrder++
		}
		lastPerPart[k] = o
		n, _ := strconv.ParseInt(val, 10, 64)
		sums := keySum[string(r.Key)]
		prev := int64(0)
		if len(sums) > 0 {
			prev = sums[len(sums)-1]
		}
		keySum[string(r.Key)] = append(sums, prev+n)
	}
	for id := range in {
		switch c := count[id]; {
		case c == 0:
			v.Lost++
		case c > 1:
			v.Dups += c - 1
		}
	}
	want := map[string][]int64{}
	for _, r := range inputs { // partition by partition in offset order: per-key input order
		n, _ := strconv.ParseInt(string(r.Value), 10, 64)
		sums := want[string(r.Key)]
		prev := int64(0)
		if len(sums) > 0 {
			prev = sums[len(sums)-1]
		}
		want[string(r.Key)] = append(sums, prev+n)
	}
	for k, w := range want {
		if !slices.Equal(w, keySum[k]) {
			v.SumMismatch++
		}
	}
	for k := range keySum {
		if _, ok := want[k]; !ok {
			v.SumMismatch++
		}
	}

	// Read_uncommitted: the last copy of each input, and which positions exist.
	type pos struct {
		p int32
		o int64
	}
	last := map[at]pos{}
	inLog := map[pos]bool{}
	for _, r := range ru {
		inLog[pos{r.Partition, r.Offset}] = true
		if _, p, o, _, ok := r.fields(); ok {
			last[at{p, o}] = pos{r.Partition, r.Offset} // ru is in offset order per partition
		}
	}
	committed := map[pos]bool{}
	for _, r := range rc {
		committed[pos{r.Partition, r.Offset}] = true
		if !inLog[pos{r.Partition, r.Offset}] {
			v.NotInLog++
		}
		if _, p, o, _, ok := r.fields(); ok && lastCopy {
			if l, ok := last[at{p, o}]; ok && l != (pos{r.Partition, r.Offset}) {
				v.AbortedVisible++
			}
		}
	}
	for _, r := range ru {
		if !committed[pos{r.Partition, r.Offset}] {
			v.Aborted++
		}
	}
	return v
}

// assertExactlyOnce fails t unless v shows output == input exactly, in order.
func assertExactlyOnce(t *testing.T, view string, inputs int, v eosVerdict) {
	t.Helper()
	assert.Equal(t, inputs, v.Outputs, "%s: output count == input count", view)
	assert.Zero(t, v.Lost, "%s: inputs without output (first by key: %v)", view, v.seq.Missing)
	assert.Zero(t, v.Dups, "%s: duplicate outputs", view)
	assert.Zero(t, v.Unexpected, "%s: outputs that name no input", view)
	assert.Zero(t, v.Mismatched, "%s: outputs whose key or value differ from their input's", view)
	assert.Zero(t, v.seq.Lost+v.seq.Dups+v.seq.Unexpected, "%s: by key and value: lost %d, dups %d, unexpected %d", view, v.seq.Lost, v.seq.Dups, v.seq.Unexpected)
	assert.Zero(t, v.PartitionOrder, "%s: outputs of an input partition out of offset order", view)
	assert.Zero(t, v.seq.OrderViolations, "%s: keys whose values are out of input order", view)
	assert.Zero(t, v.SumMismatch, "%s: keys whose running sum differs from the input's", view)
	assert.Zero(t, v.AbortedVisible, "%s: aborted_visible (records of transactions that did not commit, seen read_committed)", view)
	assert.Zero(t, v.NotInLog, "%s: read_committed records absent from the read_uncommitted log", view)
}

// sameRecords reports whether two views hold the same records at the same positions.
func sameRecords(a, b []txnRec) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Partition != b[i].Partition || a[i].Offset != b[i].Offset || string(a[i].Value) != string(b[i].Value) || string(a[i].Key) != string(b[i].Key) {
			return false
		}
	}
	return true
}

// finishRun waits for the producer and for the group's committed offsets to reach the
// input's end, then for every output transaction to finish, stops the given workers with
// SIGTERM (each must exit 0 unless in mayFail), waits for the transactions again and
// returns the input records and the output's final ends.
func (e *eosEnv) finishRun(sp *seqProducer, alive func() error, workers func() []*workerProc, mayFail map[*workerProc]bool) ([]rec, map[int32]int64) {
	t := e.t
	t.Helper()
	select {
	case <-sp.done:
	case <-time.After(4 * time.Minute):
		t.Fatal("input producer did not finish within 4m")
	}
	require.NoError(t, sp.err, "producing the input")
	ends := endOffsets(t, e.brokers, e.in, e.partitions)
	committed, ok := waitCommitted(t, newOffsetProbe(t, e.brokers), e.group, e.in, ends, 3*time.Minute, alive)
	require.True(t, ok, "committed offsets %v never reached the input's end offsets %v", committed, ends)
	waitTxnsFinished(t, e.brokers, e.out, e.partitions, time.Minute)
	for _, w := range workers() {
		if !w.running() {
			continue
		}
		code, exited := w.signal(syscall.SIGTERM, time.Minute)
		require.True(t, exited, "exactly-once worker %d did not exit within 1m of SIGTERM", w.pid())
		if !mayFail[w] {
			assert.Equal(t, 0, code, "exactly-once worker %d exit code after SIGTERM", w.pid())
		}
	}
	assert.Equal(t, ends, committedOffsets(t, e.brokers, e.group, e.in, e.partitions), "committed == input end offsets after the workers stopped")
	outEnds := waitTxnsFinished(t, e.brokers, e.out, e.partitions, time.Minute)
	return readTopic(t, e.brokers, e.in, e.partitions, time.Minute), outEnds
}

// verify reads the output back read_committed and read_uncommitted with fresh readers,
// checks the live reader's view and the final one, and returns the final verdict.
func (e *eosEnv) verify(label string, inputs []rec, outEnds map[int32]int64, live *topicReader, lastCopy bool) (eosVerdict, []txnRec, []txnRec) {
	t := e.t
	t.Helper()
	live.waitEnds(t, outEnds, 2*time.Minute)
	live.stop()
	during := live.records()
	rc := readTxnTopic(t, e.brokers, e.out, e.partitions, "read_committed", outEnds)
	ru := readTxnTopic(t, e.brokers, e.out, e.partitions, "read_uncommitted", outEnds)
	vLive := checkEOS(inputs, during, ru, lastCopy)
	vEnd := checkEOS(inputs, rc, ru, lastCopy)
	t.Logf("%s: read_committed during the faults: %s", label, vLive)
	t.Logf("%s: read_committed at the end:        %s", label, vEnd)
	assertExactlyOnce(t, "read_committed during the faults", len(inputs), vLive)
	assertExactlyOnce(t, "read_committed at the end", len(inputs), vEnd)
	assert.True(t, sameRecords(during, rc), "the live read_committed reader and the final one saw different records")
	return vEnd, rc, ru
}

// exitDesc describes how a worker ended.
func exitDesc(w *workerProc) string {
	if w.running() {
		return "running"
	}
	if ws, ok := w.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
	}
	return "exit " + strconv.Itoa(w.state.ExitCode())
}

func killedBy(w *workerProc, sig syscall.Signal) bool {
	ws, ok := w.state.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
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
	requireFaultSuite(t)
	const (
		partitions = 8
		keys       = 800
		records    = 50_000
		backlog    = 2_000
		perSec     = 330 // ~150 s of input: longer than the kills take, so every kill lands mid-stream
		kills      = 10
		static     = 7 // lives 0..6 static (fixed transactional.id), 7..10 dynamic (KIP-447 random id)
	)
	seed := testSeed(t)
	t.Logf("eos-crash: seed=%d (set SAMSA_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, 12))
	e := newEOSEnv(t, "eoscrash", partitions, true)
	logPath := filepath.Join(t.TempDir(), "eos-worker.log")
	logOnFailure(t, "exactly-once worker log", logPath)

	live := startTopicReader(t, e.brokers, e.out, partitions, "read_committed")
	// Paced so that input keeps arriving through the kills; the first worker starts with
	// a backlog of records produced before it.
	sp := startSeqProducer(t, e.brokers, e.in, partitions, keys, records, perSec)
	for deadline := time.Now().Add(time.Minute); sp.acked.Load() < backlog; {
		require.True(t, time.Now().Before(deadline), "producer stalled: %d records acknowledged in 1m", sp.acked.Load())
		time.Sleep(50 * time.Millisecond)
	}

	type life struct {
		w       *workerProc
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
			case <-l.w.done:
			case <-time.After(60 * time.Second):
				l.w.signal(syscall.SIGKILL, 30*time.Second)
				notFired++
				t.Logf("eos-crash: kill %d: fail-point %s did not fire within 60s; SIGKILLed by the test", k, fp)
			}
		} else {
			// Kill a worker that has recovered and is working: 1-3 s after its first
			// output became visible read_committed.
			deadline := time.Now().Add(90 * time.Second)
			for {
				if _, ok := live.seen(strconv.Itoa(l.w.pid())); ok || !l.w.running() {
					break
				}
				require.True(t, time.Now().Before(deadline), "worker %d produced no read_committed output within 90s of its start", l.w.pid())
				time.Sleep(50 * time.Millisecond)
			}
			// Random kills also spread the faults over the input: this one waits for its
			// slot (k/(kills+2) of the production time after the first start).
			slot := first.Add(time.Duration(k) * time.Duration(records/perSec) * time.Second / (kills + 2))
			time.Sleep(max(time.Until(slot), 0) + time.Second + time.Duration(rng.Int64N(int64(2*time.Second))))
			_, ok := l.w.signal(syscall.SIGKILL, 30*time.Second)
			require.True(t, ok, "exactly-once worker %d survived SIGKILL", l.w.pid())
		}
		l.ended, l.how = time.Now(), exitDesc(l.w)
		if !killedBy(l.w, syscall.SIGKILL) {
			selfExits++
			t.Errorf("eos-crash: kill %d: worker %d ended by itself (%s), not by the kill; log tail:\n%s", k, l.w.pid(), l.how, tailFile(logPath, 3000))
		}
		killsBy[point]++
		t.Logf("eos-crash: kill %d: %s worker pid %d, fail-point %q, %s after %s; %d records produced, %d outputs read_committed so far",
			k, l.ident, l.w.pid(), fp, l.how, l.ended.Sub(l.started).Round(time.Millisecond), sp.produced.Load(), live.count())
	}
	final := launch("")
	alive := func() error {
		if !final.w.running() {
			return fmt.Errorf("the last exactly-once worker %d ended by itself (%s)", final.w.pid(), exitDesc(final.w))
		}
		return nil
	}
	inputs, outEnds := e.finishRun(sp, alive, func() []*workerProc { return []*workerProc{final.w} }, nil)
	drained := time.Since(e.started)
	v, _, _ := e.verify("eos-crash", inputs, outEnds, live, true)

	// Recovery: from each kill to the first read_committed output of the next worker.
	var recov []string
	var worst time.Duration
	for i := 1; i < len(lives); i++ {
		first, ok := live.seen(strconv.Itoa(lives[i].w.pid()))
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
		fired[p] = countInFile(logPath, "failpoint: SIGKILL at "+p)
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

func countInFile(path, substr string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), substr)
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

func clientID(w *workerProc) string { return "worker-" + strconv.Itoa(w.pid()) }

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
	requireFaultSuite(t)
	c := newEOSCluster(t, "eoszombie", true)
	for _, pause := range []time.Duration{12 * time.Second, 8 * time.Second} {
		name := fmt.Sprintf("pause-%s", pause)
		if !t.Run(name, func(t *testing.T) { zombieRun(t, c.withTopics(t, "eoszombie", 8), pause) }) {
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
	logA, logB := filepath.Join(t.TempDir(), "zombie-a.log"), filepath.Join(t.TempDir(), "worker-b.log")
	logOnFailure(t, "worker A (zombie) log", logA)
	logOnFailure(t, "worker B log", logB)
	live := startTopicReader(t, e.brokers, e.out, partitions, "read_committed")
	sp := startSeqProducer(t, e.brokers, e.in, partitions, keys, records, perSec)

	waitSeen := func(w *workerProc, what string) {
		deadline := time.Now().Add(90 * time.Second)
		for {
			if _, ok := live.seen(strconv.Itoa(w.pid())); ok {
				return
			}
			require.True(t, w.running(), "%s (%d) exited: %s", what, w.pid(), exitDesc(w))
			require.True(t, time.Now().Before(deadline), "%s (%d) produced no read_committed output within 90s", what, w.pid())
			time.Sleep(50 * time.Millisecond)
		}
	}
	// A commits every 2 s, so when it is stopped its open transaction almost surely holds
	// outputs (and, half the time, offsets sent): the zombie has something to hide.
	a := e.startEOSWorker(logA, "", "-v", "-commit", "2s")
	waitSeen(a, "worker A")
	b := e.startEOSWorker(logB, "", "-v")
	waitSeen(b, "worker B")
	var ownedA []int32
	require.Eventually(t, func() bool {
		m, err := groupMembers(e.ac, e.group, e.in)
		if err != nil || len(m) != 2 {
			return false
		}
		ownedA = m[clientID(a)]
		return len(ownedA) > 0 && len(m[clientID(b)]) > 0 && len(ownedA)+len(m[clientID(b)]) == partitions
	}, time.Minute, 200*time.Millisecond, "the group never settled with both workers owning partitions")
	// Stop A in the middle of a transaction: 1 s after one of its commits became visible
	// (a burst of its records arriving read_committed), about 1 s before the next.
	zombieTag := strconv.Itoa(a.pid())
	prev := live.latest(zombieTag)
	for deadline := time.Now().Add(30 * time.Second); ; {
		require.True(t, time.Now().Before(deadline), "worker A committed nothing visible for 30s")
		if l := live.latest(zombieTag); l.After(prev) && time.Since(l) < 200*time.Millisecond {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)

	tStop := time.Now()
	require.NoError(t, syscall.Kill(a.pid(), syscall.SIGSTOP))
	t.Logf("%s: worker A pid %d (partitions %v) SIGSTOPped; worker B pid %d", label, a.pid(), ownedA, b.pid())

	// A stays stopped until B owns every partition, and for at least the pause.
	var tTakeover time.Time
	for deadline := tStop.Add(90 * time.Second); tTakeover.IsZero(); {
		require.True(t, time.Now().Before(deadline), "worker B did not take over A's partitions within 90s")
		require.True(t, b.running(), "worker B exited: %s", exitDesc(b))
		if m, err := groupMembers(e.ac, e.group, e.in); err == nil && len(m) == 1 && len(m[clientID(b)]) == partitions {
			tTakeover = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(max(time.Until(tStop.Add(pause)), 0))
	tCont := time.Now()
	require.NoError(t, syscall.Kill(a.pid(), syscall.SIGCONT))
	t.Logf("%s: B owned all partitions %s after the SIGSTOP; A resumed after %s",
		label, tTakeover.Sub(tStop).Round(time.Millisecond), tCont.Sub(tStop).Round(time.Millisecond))

	// Watch the zombie for 20 s: does it stop, or rejoin the group with partitions?
	rejoined := ""
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end) && a.running() && rejoined == ""; {
		if m, err := groupMembers(e.ac, e.group, e.in); err == nil && len(m[clientID(a)]) > 0 {
			rejoined = fmt.Sprintf("back in the group %s after SIGCONT, owning %v", time.Since(tCont).Round(time.Millisecond), m[clientID(a)])
		}
		time.Sleep(250 * time.Millisecond)
	}
	zombieEnd := exitDesc(a)
	t.Logf("%s: worker A after SIGCONT: %s; %s", label, zombieEnd, orDefault(rejoined, "not seen owning partitions again"))

	alive := func() error {
		if !b.running() {
			return fmt.Errorf("worker B ended by itself (%s)", exitDesc(b))
		}
		return nil
	}
	inputs, outEnds := e.finishRun(sp, alive, func() []*workerProc { return []*workerProc{a, b} }, map[*workerProc]bool{a: true})
	aExit := exitDesc(a)
	v, rc, ru := e.verify(label, inputs, outEnds, live, false)

	// A's old generation ends when it is assigned partitions again after SIGCONT (its
	// log's first "group: assigned" from then on), or never.
	tRejoin := time.Time{}
	var lines []string
	for _, l := range strings.Split(tailFile(logA, 1<<22), "\n") {
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
	stale := func(r txnRec) bool { // written by A after SIGCONT under its old generation
		return !r.Timestamp.Before(cont) && (tRejoin.IsZero() || r.Timestamp.Before(tRejoin))
	}
	zombie := strconv.Itoa(a.pid())
	committed := map[[2]int64]bool{}
	var visibleStale, visibleBefore, visibleRejoined int
	for _, r := range rc {
		committed[[2]int64{int64(r.Partition), r.Offset}] = true
		if r.writer() != zombie {
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
		if r.writer() == zombie && !committed[[2]int64{int64(r.Partition), r.Offset}] {
			hidden++
			if stale(r) {
				hiddenStale++
			}
		}
	}
	// B's recovery: its first read_committed output of one of A's input partitions.
	tRecover := time.Time{}
	for _, r := range rc {
		if _, p, _, w, ok := r.fields(); ok && w == strconv.Itoa(b.pid()) && slices.Contains(ownedA, p) && !r.Timestamp.Before(tStop) {
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

// groupCoordinator returns the broker coordinating group (-1 when unknown).
func groupCoordinator(ac *kafka.AdminClient, group string) int32 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := ac.DescribeConsumerGroups(ctx, []string{group})
	if err != nil || len(res.ConsumerGroupDescriptions) != 1 {
		return -1
	}
	return int32(res.ConsumerGroupDescriptions[0].Coordinator.ID)
}

// leaders returns the leader of each partition of topic.
func leaders(ac *kafka.AdminClient, topic string) (map[int32]int32, error) {
	md, err := ac.GetMetadata(&topic, false, 10000)
	if err != nil {
		return nil, err
	}
	tm, ok := md.Topics[topic]
	if !ok || tm.Error.Code() != kafka.ErrNoError {
		return nil, fmt.Errorf("metadata of %s: %v", topic, tm.Error)
	}
	out := map[int32]int32{}
	for _, p := range tm.Partitions {
		out[p.ID] = p.Leader
	}
	return out, nil
}

// TestEOSFaultBrokerKill: coordinator failover mid-transaction. One exactly-once worker (fixed transactional
// id) copies 36,000 records from 8 partitions while brokers are SIGKILLed in turn, each
// kept down 5 s and restarted: first the leader of its transaction coordinator's
// __transaction_state partition, then the group coordinator (or, when that is the same
// broker, another one). The cluster keeps the broker defaults (no fast transaction
// abort). Still exactly once: output == input, no duplicates, order kept, nothing
// aborted visible; and the worker keeps running.
func TestEOSFaultBrokerKill(t *testing.T) {
	requireFaultSuite(t)
	const (
		partitions = 8
		keys       = 800
		records    = 36_000
		perSec     = 450
		down       = 5 * time.Second
	)
	e := newEOSEnv(t, "eosbroker", partitions, false)
	logPath := filepath.Join(t.TempDir(), "eos-worker.log")
	logOnFailure(t, "exactly-once worker log", logPath)
	live := startTopicReader(t, e.brokers, e.out, partitions, "read_committed")
	sp := startSeqProducer(t, e.brokers, e.in, partitions, keys, records, perSec)
	txnID := e.group + "-txn"
	w := e.startEOSWorker(logPath, "", "-txnid", txnID, "-v")
	restarts := 0
	alive := func() error {
		if !w.running() {
			restarts++
			t.Errorf("eos-broker: the exactly-once worker ended by itself (%s); restarting it. Log tail:\n%s", exitDesc(w), tailFile(logPath, 3000))
			if restarts > 3 {
				return fmt.Errorf("the exactly-once worker keeps failing")
			}
			w = e.startEOSWorker(logPath, "", "-txnid", txnID, "-v")
		}
		return nil
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, ok := live.seen(strconv.Itoa(w.pid())); ok {
			break
		}
		require.True(t, w.running(), "exactly-once worker exited: %s", exitDesc(w))
		require.True(t, time.Now().Before(deadline), "no read_committed output within 90s")
		time.Sleep(50 * time.Millisecond)
	}

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
		groupCoord := groupCoordinator(e.ac, e.group)
		var target int32
		var why string
		if round == 0 {
			target, why = 2, "default (transaction coordinator not found)"
			if txnLeaders, err := leaders(e.ac, "__transaction_state"); err == nil && len(txnLeaders) > 0 {
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
		outLeaders, _ := leaders(e.ac, e.out)
		var ledOut []int32
		for p, l := range outLeaders {
			if l == target {
				ledOut = append(ledOut, p)
			}
		}
		slices.Sort(ledOut)
		k := &kill{broker: target, why: why, outputsThen: live.count(), at: time.Now()}
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
			if live.count() > k.outputsThen && time.Since(k.back) > 5*time.Second {
				break
			}
			if time.Now().After(settle) {
				// Where is it stuck? A goroutine dump (SIGQUIT) lands in its log.
				_ = w.cmd.Process.Signal(syscall.SIGQUIT)
				time.Sleep(2 * time.Second)
				require.Fail(t, fmt.Sprintf("no new read_committed output within 2m of broker %d's restart (worker sent SIGQUIT: goroutines in its log)", target))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	inputs, outEnds := e.finishRun(sp, alive, func() []*workerProc { return []*workerProc{w} }, nil)
	v, _, _ := e.verify("eos-broker", inputs, outEnds, live, true)

	// The read_committed stall after each kill: the first arrival after it, and the
	// longest gap between arrivals from the kill until 30 s after the broker was back.
	var arrivals []time.Time
	for _, r := range live.records() {
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
	aborts := countInFile(logPath, "aborting transaction")
	replaced := countInFile(logPath, "producer fenced; replacing it")
	t.Logf("eos-broker: records=%d %s %s worker_aborts=%d worker_producers_replaced=%d worker_restarts=%d total=%s",
		len(inputs), v, strings.Join(figures, " "), aborts, replaced, restarts, time.Since(e.started).Round(time.Millisecond))
	assert.Equal(t, records, len(inputs), "input records")
	assert.Zero(t, restarts, "the worker must survive a broker's crash (replication 3, min.insync.replicas 2): see its fatal error above")
}
