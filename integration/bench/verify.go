package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// verdict is the reader's check of one trial's output topic.
type verdict struct {
	output  int64 // records in the output topic
	missing int64 // input records with no copy in the output
	dups    int64 // copies beyond the first
	corrupt int64 // output records whose key is not an input key or whose value differs
}

func (v verdict) ok() bool { return v.missing == 0 && v.corrupt == 0 }

// keyIndex parses key(i) back to i; -1 if b is not such a key.
func keyIndex(b []byte) int {
	digits, ok := bytes.CutPrefix(b, []byte("key-"))
	n, err := strconv.ParseUint(string(digits), 10, 31)
	if !ok || err != nil {
		return -1
	}
	return int(n)
}

// verify reads the whole output topic after the contestant stopped and checks that every
// input record (key and value) appears in it exactly once. It reads outside the measured
// window, from a fresh assignment (no group), up to the high watermarks it saw first.
func (e *env) verify(ctx context.Context, topic string) (verdict, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c, err := newReader(e.o.brokers, "bench-verify", topic, e.o.partitions)
	if err != nil {
		return verdict{}, err
	}
	defer c.Close()
	var v verdict
	ends, total, err := highWatermarks(c, topic, e.o.partitions)
	if err != nil {
		return verdict{}, err
	}
	v.output = total
	highs := make(map[int32]int64, e.o.partitions)
	for p, high := range ends {
		if high > 0 {
			highs[int32(p)] = high
		}
	}
	want := inputValue(e.o.valueSize)
	seen := make([]uint16, e.o.records)
	for len(highs) > 0 {
		if err := ctx.Err(); err != nil {
			return verdict{}, fmt.Errorf("reading %s: %d partitions not read to the end: %w", topic, len(highs), err)
		}
		switch ev := c.Poll(100).(type) {
		case *kafka.Message:
			if ev.TopicPartition.Error != nil {
				return verdict{}, ev.TopicPartition.Error
			}
			i := keyIndex(ev.Key)
			if i < 0 || i >= len(seen) || !bytes.Equal(ev.Value, want) {
				v.corrupt++
			} else if seen[i] < math.MaxUint16 {
				seen[i]++
			}
			p := ev.TopicPartition.Partition
			if h, ok := highs[p]; ok && int64(ev.TopicPartition.Offset)+1 >= h {
				delete(highs, p)
			}
		case kafka.Error:
			if ev.IsFatal() {
				return verdict{}, ev
			}
		}
	}
	for _, n := range seen {
		switch {
		case n == 0:
			v.missing++
		case n > 1:
			v.dups += int64(n - 1)
		}
	}
	return v, nil
}
