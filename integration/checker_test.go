package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/record"
)

// Checking helpers shared by the processor tests, judging from outside the framework: an outside
// producer of keyed, sequenced records; a reader that reads a topic back to its end
// offsets; and the tally of lost records, duplicates and per-key order violations.

// rec is one record read back from a topic.
type rec struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kafka.Header
}

func (r rec) header(k string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value), true
		}
	}
	return "", false
}

// readTopic reads every record of topic below its end offsets at the time of the call,
// partition by partition in offset order. It fails t if that takes longer than timeout.
func readTopic(t *testing.T, brokers, topic string, partitions int, timeout time.Duration) []rec {
	t.Helper()
	ends := endOffsets(t, brokers, topic, partitions)
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":  brokers,
		"group.id":           stack.UniqueName("reader"),
		"enable.auto.commit": false,
		"auto.offset.reset":  "earliest",
		"log_level":          3,
	})
	require.NoError(t, err)
	defer c.Close()
	var tps []kafka.TopicPartition
	byPart := make([][]rec, partitions)
	next := make(map[int32]int64, partitions)
	for p := range int32(partitions) {
		if ends[p] > 0 {
			tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p, Offset: kafka.OffsetBeginning})
		}
		next[p] = 0
	}
	require.NoError(t, c.Assign(tps))
	done := func() bool {
		for p := range int32(partitions) {
			if next[p] < ends[p] {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(timeout)
	for !done() {
		require.True(t, time.Now().Before(deadline), "reading %s back: positions %v, ends %v after %s", topic, next, ends, timeout)
		switch ev := c.Poll(200).(type) {
		case *kafka.Message:
			if ev.TopicPartition.Error != nil {
				continue
			}
			p, off := ev.TopicPartition.Partition, int64(ev.TopicPartition.Offset)
			if off >= ends[p] {
				continue
			}
			byPart[p] = append(byPart[p], rec{Partition: p, Offset: off, Key: ev.Key, Value: ev.Value, Headers: ev.Headers})
			next[p] = off + 1
		case kafka.Error:
			t.Logf("reading %s: %v", topic, ev)
		}
	}
	var out []rec
	for _, rs := range byPart {
		out = append(out, rs...)
	}
	return out
}

// readCommittedTopic reads topic back read_committed (admin.Scan: what the processor
// reads again when it makes owed state effects), once no transaction is open on it:
// aborted records and transaction markers are left out.
func readCommittedTopic(t *testing.T, brokers, topic string, partitions int, timeout time.Duration) []rec {
	t.Helper()
	ends := waitTxnsFinished(t, brokers, topic, partitions, timeout)
	var ranges []admin.Range
	for p := range int32(partitions) {
		ranges = append(ranges, admin.Range{TopicPartition: record.TopicPartition{Topic: topic, Partition: p}, To: ends[p]})
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []rec
	err := admin.Scan(ctx, brokers, nil, ranges, func(m record.Message) error {
		r := rec{Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value}
		for _, h := range m.Headers {
			r.Headers = append(r.Headers, kafka.Header{Key: h.Key, Value: h.Value})
		}
		out = append(out, r)
		return nil
	})
	require.NoError(t, err, "reading %s back read_committed up to %v", topic, ends)
	return out
}

// offsetProbe reads a group's committed offsets through one admin client, for polling.
type offsetProbe struct {
	brokers string
}

func newOffsetProbe(t *testing.T, brokers string) *offsetProbe {
	return &offsetProbe{brokers: brokers}
}

// committed returns the group's committed offset per partition of topic (-1001 where
// nothing is committed), through a consumer (see committedOffsets for why not the admin
// client).
func (p *offsetProbe) committed(group, topic string, partitions int) (map[int32]int64, error) {
	return fetchCommitted(p.brokers, group, topic, partitions)
}

// progress sums the committed offsets (0 where nothing is committed).
func progress(committed map[int32]int64) int64 {
	var n int64
	for _, o := range committed {
		if o > 0 {
			n += o
		}
	}
	return n
}

// waitCommitted polls until the group's committed offsets equal ends, or timeout. It
// returns the last committed offsets seen and whether they matched. stop, when it
// returns an error, ends the wait early (a processor failed).
func waitCommitted(t *testing.T, probe *offsetProbe, group, topic string, ends map[int32]int64, timeout time.Duration, stop func() error) (map[int32]int64, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[int32]int64
	for {
		c, err := probe.committed(group, topic, len(ends))
		if err == nil {
			last = c
			if maps.Equal(c, ends) {
				return c, true
			}
		}
		if stop != nil {
			if err := stop(); err != nil {
				t.Errorf("while waiting for commits: %v", err)
				return last, false
			}
		}
		if time.Now().After(deadline) {
			return last, false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// seqProducer writes n records to topic with an idempotent (acks=all) producer: key
// "k%05d" for keys distinct keys, value the decimal per-key sequence number, partition
// key index mod partitions, paced at perSec records per second (0: as fast as possible).
// It stops early when the test ends.
type seqProducer struct {
	produced atomic.Int64
	acked    atomic.Int64
	ending   atomic.Bool // endNow was called
	quit     chan struct{}
	done     chan struct{}
	err      error // valid after done
}

func seqKey(i, keys int) string { return fmt.Sprintf("k%05d", i%keys) }

func startSeqProducer(t *testing.T, brokers, topic string, partitions, keys, n, perSec int) *seqProducer {
	sp := &seqProducer{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(sp.done)
		sp.err = sp.run(brokers, topic, partitions, keys, n, perSec)
	}()
	t.Cleanup(func() {
		close(sp.quit)
		select {
		case <-sp.done:
		case <-time.After(time.Minute):
			t.Errorf("producer did not stop within 1m of the test's end")
		}
	})
	return sp
}

var errQuit = errors.New("producer stopped: the test ended")

// endNow makes the producer stop early, as if n were what it has produced so far (to the
// next hundred): it still waits for every delivery report and fails if one failed.
func (sp *seqProducer) endNow() { sp.ending.Store(true) }

func (sp *seqProducer) run(brokers, topic string, partitions, keys, n, perSec int) error {
	p, err := newTestProducer(brokers)
	if err != nil {
		return err
	}
	defer p.Close()
	dr := make(chan kafka.Event, 4096)
	var failed atomic.Int64
	var firstErr atomic.Value
	drainAcks(n, dr, sp.quit, &sp.acked, &failed, &firstErr)
	start := time.Now()
	for i := range n {
		if i%100 == 0 {
			select {
			case <-sp.quit:
				return errQuit
			default:
			}
			if sp.ending.Load() {
				n = i
				break
			}
			if perSec > 0 {
				if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(perSec))); d > 0 {
					time.Sleep(d)
				}
			}
		}
		m := &kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32((i % keys) % partitions)},
			Key:            []byte(seqKey(i, keys)),
			Value:          []byte(strconv.Itoa(i / keys)),
		}
		for attempt := 0; ; attempt++ {
			err := p.Produce(m, dr)
			if err == nil {
				break
			}
			if attempt > 600 {
				return fmt.Errorf("produce record %d: %w", i, err)
			}
			p.Flush(100) // local queue full: let it drain
		}
		sp.produced.Add(1)
	}
	for deadline := time.After(2 * time.Minute); sp.acked.Load()+failed.Load() < int64(n); {
		select {
		case <-sp.quit:
			return errQuit
		case <-deadline:
			return fmt.Errorf("only %d of %d delivery reports after 2m", sp.acked.Load()+failed.Load(), n)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d records not acknowledged (first: %v)", f, n, firstErr.Load())
	}
	return nil
}

// seqOutput is the value the identity handlers write: the input value, then the input
// partition and offset, then a tag naming the writer.
func seqOutput(value string, partition int32, offset int64, tag string) string {
	return value + "|" + strconv.Itoa(int(partition)) + "|" + strconv.FormatInt(offset, 10) + "|" + tag
}

// seqTally is the checker's verdict on an identity run.
type seqTally struct {
	Inputs          int
	Outputs         int
	Lost            int            // inputs with no output
	Dups            int            // Σ(count−1) over inputs
	Unexpected      int            // outputs that match no input
	OrderViolations int            // keys whose first-occurrence sequence differs from input order
	DupsByPartition map[int32]int  // per input partition
	DupBurst        map[string]int // per (writer of the first copy, input partition)
	ByWriter        map[string]int // outputs per writer tag (instance name or worker pid)
	Missing         []string       // the first few lost inputs
}

// maxDupBurst is the most duplicates one writer (a killed or closed instance) left in one
// input partition: what its successor replayed there.
func (s seqTally) maxDupBurst() int {
	m := 0
	for _, d := range s.DupBurst {
		m = max(m, d)
	}
	return m
}

func (s seqTally) maxDupPartition() int {
	m := 0
	for _, d := range s.DupsByPartition {
		m = max(m, d)
	}
	return m
}

// tallySeq checks outputs of an identity handler against inputs of a seqProducer.
// Outputs must be in partition/offset order (as readTopic returns them): all outputs of
// a key are in one partition, so their order there is the order they were written.
func tallySeq(inputs, outputs []rec) seqTally {
	s := seqTally{Inputs: len(inputs), Outputs: len(outputs), DupsByPartition: map[int32]int{}, DupBurst: map[string]int{}, ByWriter: map[string]int{}}
	count := make(map[string]int, len(inputs))
	firstWriter := make(map[string]string, len(inputs)) // id -> "tag/partition" of the first copy
	inOrder := map[string][]string{}                    // key -> seqs in input order
	for _, r := range inputs {
		id := string(r.Key) + "#" + string(r.Value)
		count[id] = 0
		inOrder[string(r.Key)] = append(inOrder[string(r.Key)], string(r.Value))
	}
	outFirst := map[string][]string{}
	for _, r := range outputs {
		fields := strings.SplitN(string(r.Value), "|", 4)
		id := string(r.Key) + "#" + fields[0]
		if len(fields) == 4 {
			s.ByWriter[fields[3]]++
		}
		n, ok := count[id]
		if !ok {
			s.Unexpected++
			continue
		}
		count[id] = n + 1
		if n == 0 {
			outFirst[string(r.Key)] = append(outFirst[string(r.Key)], fields[0])
			if len(fields) == 4 {
				firstWriter[id] = fields[3] + "/" + fields[1]
			}
		} else {
			s.Dups++
			if len(fields) > 1 {
				p, _ := strconv.Atoi(fields[1])
				s.DupsByPartition[int32(p)]++
			}
			if n == 1 {
				s.DupBurst[firstWriter[id]]++
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(count)) {
		if count[id] == 0 {
			s.Lost++
			if len(s.Missing) < 5 {
				s.Missing = append(s.Missing, id)
			}
		}
	}
	for k, want := range inOrder {
		if !slices.Equal(want, outFirst[k]) {
			s.OrderViolations++
		}
	}
	return s
}

// fileLogger returns a logger writing to a file under t.TempDir(); when t fails, the
// file's tail is logged. countLines counts lines containing a substring (rebalances).
type fileLog struct {
	path string
}

func newFileLog(t *testing.T, name string, level slog.Level) (*slog.Logger, *fileLog) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(path)
	require.NoError(t, err)
	t.Cleanup(func() {
		f.Close()
		if t.Failed() {
			t.Logf("--- %s log tail:\n%s", name, tailFile(path, 4000))
		}
	})
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: level})), &fileLog{path: path}
}

func (l *fileLog) count(substr string) int {
	b, _ := os.ReadFile(l.path)
	return bytes.Count(b, []byte(substr))
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// drainAcks counts n delivery reports from dr (or stops when quit closes) on its own
// goroutine: acknowledged ones into acked, failures into failed, the first error kept.
// The returned channel closes when it is done.
func drainAcks(n int, dr <-chan kafka.Event, quit <-chan struct{}, acked, failed *atomic.Int64, firstErr *atomic.Value) <-chan struct{} {
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for seen := 0; seen < n; {
			var ev kafka.Event
			select {
			case ev = <-dr:
			case <-quit:
				return
			}
			m, ok := ev.(*kafka.Message)
			if !ok {
				continue
			}
			seen++
			if m.TopicPartition.Error != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, m.TopicPartition.Error)
				continue
			}
			acked.Add(1)
		}
	}()
	return drained
}
