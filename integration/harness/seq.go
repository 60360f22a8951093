package harness

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// SeqProducer writes n records to topic with an idempotent (acks=all) producer: key
// "k%05d" for keys distinct keys, value the decimal per-key sequence number (or the
// record of StartSeqProducerWith's rec), partition key index mod partitions, paced at
// perSec records per second (0: as fast as possible). It stops early when the test ends.
type SeqProducer struct {
	Produced atomic.Int64
	Acked    atomic.Int64
	Limit    atomic.Int64 // record Limit and later wait until the test raises it; pacing restarts then
	ending   atomic.Bool  // EndNow was called
	quit     chan struct{}
	Done     chan struct{}
	Err      error // valid after Done
}

// SeqKey is the key of record i.
func SeqKey(i, keys int) string { return fmt.Sprintf("k%05d", i%keys) }

// StartSeqProducer starts producing; the producer stops (bounded) when tb ends.
func StartSeqProducer(tb testing.TB, brokers, topic string, partitions, keys, n, perSec int) *SeqProducer {
	return StartSeqProducerWith(tb, brokers, topic, partitions, keys, n, perSec, n, nil)
}

// StartSeqProducerWith is StartSeqProducer that holds before record limit (see Limit)
// and, when rec is not nil, writes rec(i) as record i's key and value.
func StartSeqProducerWith(tb testing.TB, brokers, topic string, partitions, keys, n, perSec, limit int,
	rec func(i int) (key, value []byte)) *SeqProducer {
	if rec == nil {
		rec = func(i int) ([]byte, []byte) { return []byte(SeqKey(i, keys)), []byte(strconv.Itoa(i / keys)) }
	}
	sp := &SeqProducer{quit: make(chan struct{}), Done: make(chan struct{})}
	sp.Limit.Store(int64(limit))
	go func() {
		defer close(sp.Done)
		sp.Err = sp.run(brokers, topic, partitions, keys, n, perSec, rec)
	}()
	StopAtEnd(tb, sp.quit, sp.Done)
	return sp
}

// StopAtEnd closes quit when tb ends and waits up to a minute for done.
func StopAtEnd(tb testing.TB, quit chan struct{}, done <-chan struct{}) {
	tb.Cleanup(func() {
		close(quit)
		select {
		case <-done:
		case <-time.After(time.Minute):
			tb.Errorf("producer did not stop within 1m of the test's end")
		}
	})
}

// ErrQuit is a producer's error when the test ended first.
var ErrQuit = errors.New("producer stopped: the test ended")

// EndNow makes the producer stop early, as if n were what it has produced so far (to the
// next hundred): it still waits for every delivery report and fails if one failed.
func (sp *SeqProducer) EndNow() { sp.ending.Store(true) }

// Wait waits (bounded) until the producer has finished and returns its error.
func (sp *SeqProducer) Wait(timeout time.Duration) error {
	select {
	case <-sp.Done:
		return sp.Err
	case <-time.After(timeout):
		return fmt.Errorf("producer did not finish within %s (%d produced, %d acknowledged)",
			timeout, sp.Produced.Load(), sp.Acked.Load())
	}
}

func (sp *SeqProducer) run(brokers, topic string, partitions, keys, n, perSec int,
	rec func(int) ([]byte, []byte)) error {
	p, err := NewProducer(brokers)
	if err != nil {
		return err
	}
	defer p.Close()
	dr := make(chan kafka.Event, 4096)
	var failed atomic.Int64
	var firstErr atomic.Value
	DrainAcks(n, dr, sp.quit, &sp.Acked, &failed, &firstErr)
	start, paced := time.Now(), 0
	for i := range n {
		if int64(i) >= sp.Limit.Load() {
			for int64(i) >= sp.Limit.Load() {
				select {
				case <-sp.quit:
					return ErrQuit
				case <-time.After(10 * time.Millisecond):
				}
			}
			start, paced = time.Now(), 0
		}
		if i%100 == 0 {
			select {
			case <-sp.quit:
				return ErrQuit
			default:
			}
			if sp.ending.Load() {
				n = i
				break
			}
			if perSec > 0 {
				if d := time.Until(start.Add(time.Duration(paced) * time.Second / time.Duration(perSec))); d > 0 {
					time.Sleep(d)
				}
			}
		}
		paced++
		k, v := rec(i)
		m := &kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32((i % keys) % partitions)},
			Key:            k,
			Value:          v,
		}
		if err := Produce(p, m, dr); err != nil {
			return fmt.Errorf("produce record %d: %w", i, err)
		}
		sp.Produced.Add(1)
	}
	for deadline := time.After(2 * time.Minute); sp.Acked.Load()+failed.Load() < int64(n); {
		select {
		case <-sp.quit:
			return ErrQuit
		case <-deadline:
			return fmt.Errorf("only %d of %d delivery reports after 2m", sp.Acked.Load()+failed.Load(), n)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d records not acknowledged (first: %v)", f, n, firstErr.Load())
	}
	return nil
}

// SeqOutput is the value the identity handlers write: the input value, then the input
// partition and offset, then a tag naming the writer.
func SeqOutput(value string, partition int32, offset int64, tag string) string {
	return value + "|" + strconv.Itoa(int(partition)) + "|" + strconv.FormatInt(offset, 10) + "|" + tag
}

// SeqTally is the checker's verdict on an identity run.
type SeqTally struct {
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

// MaxDupBurst is the most duplicates one writer (a killed or closed instance) left in one
// input partition: what its successor replayed there.
func (s SeqTally) MaxDupBurst() int { return maxValue(s.DupBurst) }

// MaxDupPartition is the most duplicates in one input partition.
func (s SeqTally) MaxDupPartition() int { return maxValue(s.DupsByPartition) }

func maxValue[K comparable](m map[K]int) int {
	n := 0
	for _, d := range m {
		n = max(n, d)
	}
	return n
}

// TallySeq checks outputs of an identity handler against inputs of a SeqProducer.
// Outputs must be in partition/offset order (as ReadTopic returns them): all outputs of
// a key are in one partition, so their order there is the order they were written.
func TallySeq(inputs, outputs []Rec) SeqTally {
	s := SeqTally{Inputs: len(inputs), Outputs: len(outputs), DupsByPartition: map[int32]int{}, DupBurst: map[string]int{}, ByWriter: map[string]int{}}
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
