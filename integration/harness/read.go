package harness

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/record"
)

// Rec is one record read back from a topic.
type Rec struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kafka.Header
}

// Header returns the value of the record's header k.
func (r Rec) Header(k string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value), true
		}
	}
	return "", false
}

// ReadTopic reads every record of topic below its end offsets at the time of the call,
// partition by partition in offset order. It fails tb if that takes longer than timeout.
func ReadTopic(tb testing.TB, brokers, topic string, partitions int, timeout time.Duration) []Rec {
	tb.Helper()
	ends := EndOffsets(tb, brokers, topic, partitions)
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":  brokers,
		"group.id":           stack.UniqueName("reader"),
		"enable.auto.commit": false,
		"auto.offset.reset":  "earliest",
		"log_level":          3,
	})
	require.NoError(tb, err)
	defer c.Close()
	var tps []kafka.TopicPartition
	byPart := make([][]Rec, partitions)
	next := make(map[int32]int64, partitions)
	for p := range int32(partitions) {
		if ends[p] > 0 {
			tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p, Offset: kafka.OffsetBeginning})
		}
		next[p] = 0
	}
	require.NoError(tb, c.Assign(tps))
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
		require.True(tb, time.Now().Before(deadline), "reading %s back: positions %v, ends %v after %s", topic, next, ends, timeout)
		switch ev := c.Poll(200).(type) {
		case *kafka.Message:
			if ev.TopicPartition.Error != nil {
				continue
			}
			p, off := ev.TopicPartition.Partition, int64(ev.TopicPartition.Offset)
			if off >= ends[p] {
				continue
			}
			byPart[p] = append(byPart[p], Rec{Partition: p, Offset: off, Key: ev.Key, Value: ev.Value, Headers: ev.Headers})
			next[p] = off + 1
		case kafka.Error:
			tb.Logf("reading %s: %v", topic, ev)
		}
	}
	return slices.Concat(byPart...)
}

// ReadCommittedTopic reads topic back read_committed (admin.Scan: what the processor
// reads again when it makes owed state effects), once no transaction is open on it:
// aborted records and transaction markers are left out.
func ReadCommittedTopic(tb testing.TB, brokers, topic string, partitions int, timeout time.Duration) []Rec {
	tb.Helper()
	ends := WaitTxnsFinished(tb, brokers, topic, partitions, timeout)
	var ranges []admin.Range
	for p := range int32(partitions) {
		ranges = append(ranges, admin.Range{TopicPartition: record.TopicPartition{Topic: topic, Partition: p}, To: ends[p]})
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []Rec
	err := admin.Scan(ctx, brokers, nil, ranges, func(m record.Message) error {
		r := Rec{Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value}
		for _, h := range m.Headers {
			r.Headers = append(r.Headers, kafka.Header{Key: h.Key, Value: h.Value})
		}
		out = append(out, r)
		return nil
	})
	require.NoError(tb, err, "reading %s back read_committed up to %v", topic, ends)
	return out
}

// TxnRec is an output record read back, with its timestamp (the writer's CreateTime) and
// when the reader received it.
type TxnRec struct {
	Rec
	Timestamp time.Time
	Arrived   time.Time
}

// Fields splits an identity worker's output value (SeqOutput): input value, partition,
// offset, writer.
func (r TxnRec) Fields() (value string, partition int32, offset int64, writer string, ok bool) {
	f := strings.SplitN(string(r.Value), "|", 4)
	if len(f) != 4 {
		return "", 0, 0, "", false
	}
	p, err1 := strconv.Atoi(f[1])
	o, err2 := strconv.ParseInt(f[2], 10, 64)
	return f[0], int32(p), o, f[3], err1 == nil && err2 == nil
}

// Writer is the tag of the instance or worker that wrote the record.
func (r TxnRec) Writer() string {
	_, _, _, w, _ := r.Fields()
	return w
}

// PlainRecs drops the arrival times.
func PlainRecs(rs []TxnRec) []Rec {
	out := make([]Rec, len(rs))
	for i := range rs {
		out[i] = rs[i].Rec
	}
	return out
}

// TopicReader reads every partition of a topic from the beginning, at one isolation
// level, on its own goroutine, until stopped: the "during the faults" reader, and (run to
// given ends) the final one. It records when it first saw each writer's output and the
// fetch position of every partition (which passes transaction markers).
type TopicReader struct {
	c          *kafka.Consumer
	topic      string
	partitions int
	quit, done chan struct{}

	mu        sync.Mutex
	byPart    [][]TxnRec
	pos       map[int32]int64
	firstSeen map[string]time.Time // writer pid -> first arrival of one of its records
	lastSeen  map[string]time.Time // writer pid -> last arrival of one of its records
	written   map[string]time.Time // writer pid -> newest timestamp of one of its records
	errs      []string
}

// StartTopicReader starts a reader of topic at isolation ("read_committed" or
// "read_uncommitted"), stopped when tb ends.
func StartTopicReader(tb testing.TB, brokers, topic string, partitions int, isolation string) *TopicReader {
	tb.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":  brokers,
		"group.id":           stack.UniqueName("eos-reader"),
		"enable.auto.commit": false,
		"auto.offset.reset":  "earliest",
		"isolation.level":    isolation,
		"fetch.wait.max.ms":  100,
		"log_level":          3,
	})
	require.NoError(tb, err)
	tps := make([]kafka.TopicPartition, partitions)
	for p := range partitions {
		tps[p] = kafka.TopicPartition{Topic: &topic, Partition: int32(p), Offset: kafka.OffsetBeginning}
	}
	require.NoError(tb, c.Assign(tps))
	r := &TopicReader{c: c, topic: topic, partitions: partitions, quit: make(chan struct{}), done: make(chan struct{}),
		byPart: make([][]TxnRec, partitions), pos: map[int32]int64{}, firstSeen: map[string]time.Time{}, lastSeen: map[string]time.Time{}, written: map[string]time.Time{}}
	go r.run(tps)
	tb.Cleanup(r.Stop)
	return r
}

func (r *TopicReader) run(tps []kafka.TopicPartition) {
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
			m := TxnRec{Rec: Rec{Partition: ev.TopicPartition.Partition, Offset: int64(ev.TopicPartition.Offset), Key: ev.Key, Value: ev.Value},
				Timestamp: ev.Timestamp, Arrived: time.Now()}
			w := m.Writer()
			r.mu.Lock()
			r.byPart[m.Partition] = append(r.byPart[m.Partition], m)
			if _, ok := r.firstSeen[w]; !ok {
				r.firstSeen[w] = m.Arrived
			}
			r.lastSeen[w] = m.Arrived
			if m.Timestamp.After(r.written[w]) {
				r.written[w] = m.Timestamp
			}
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

// Stop stops the reader (again: a no-op).
func (r *TopicReader) Stop() {
	select {
	case <-r.quit:
		return
	default:
	}
	close(r.quit)
	<-r.done
	r.c.Close()
}

// Latest returns when the reader last received a record written by writer.
func (r *TopicReader) Latest(writer string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastSeen[writer]
}

// Written returns the newest timestamp (producer create time) of a record written by
// writer that the reader received.
func (r *TopicReader) Written(writer string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.written[writer]
}

// Seen returns when the reader first received a record written by writer.
func (r *TopicReader) Seen(writer string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.firstSeen[writer]
	return at, ok
}

// Count is the number of records read so far.
func (r *TopicReader) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rs := range r.byPart {
		n += len(rs)
	}
	return n
}

// WaitSeen waits up to timeout until the reader has received a record written by each
// of workers (writer tag: its pid), failing tb if one exits first or time runs out.
func (r *TopicReader) WaitSeen(tb testing.TB, timeout time.Duration, workers ...*WorkerProc) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for _, w := range workers {
		for {
			if _, ok := r.Seen(strconv.Itoa(w.Pid())); ok {
				break
			}
			require.NoError(tb, w.Alive())
			require.True(tb, time.Now().Before(deadline), "no output of worker %d on %s within %s",
				w.Pid(), r.topic, timeout)
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Records returns what was read, partition by partition in offset order.
func (r *TopicReader) Records() []TxnRec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Concat(r.byPart...)
}

// WaitEnds waits until the reader's position reached ends on every partition.
func (r *TopicReader) WaitEnds(tb testing.TB, ends map[int32]int64, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		done := true
		for p, e := range ends {
			if r.pos[p] < e {
				done = false
			}
		}
		pos := Offsets(r.pos)
		errs := slices.Clone(r.errs)
		r.mu.Unlock()
		if done {
			return
		}
		require.True(tb, time.Now().Before(deadline), "reading %s: positions %s, ends %s after %s (errors: %v)", r.topic, pos, Offsets(ends), timeout, errs)
		time.Sleep(100 * time.Millisecond)
	}
}

// Offsets formats offsets per partition as "p:offset ..." in partition order.
func Offsets(m map[int32]int64) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%d:%d ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

// ReadTxnTopic reads topic to ends at isolation level iso with a fresh consumer.
func ReadTxnTopic(tb testing.TB, brokers, topic string, partitions int, iso string, ends map[int32]int64) []TxnRec {
	tb.Helper()
	r := StartTopicReader(tb, brokers, topic, partitions, iso)
	r.WaitEnds(tb, ends, 2*time.Minute)
	r.Stop()
	return r.Records()
}
