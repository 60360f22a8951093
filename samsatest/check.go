package samsatest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/admin"
)

// Delivery describes a pipeline for CheckDelivery: what went into Input, what should
// have come out in Output, and the group whose commits should cover the input.
type Delivery struct {
	Brokers       string
	Input, Output string
	// Group, when set, must have committed every partition of Input to its end.
	Group string
	// Expect maps an input record to the output record the pipeline makes of it. nil:
	// the same key and value (a pass-through). Values should be unique per key (a
	// sequence number), so that order and duplicates can be told apart.
	Expect func(key, value []byte) (outKey, outValue []byte)
	// ExactlyOnce counts every duplicate as a failure (read_committed, as always here);
	// otherwise duplicates are reported but allowed (at-least-once).
	ExactlyOnce bool
}

// DeliveryReport is what CheckDelivery found.
type DeliveryReport struct {
	Inputs, Outputs int
	// Missing: expected outputs not found. Duplicates: outputs seen more than once.
	// Reordered: keys whose outputs' first occurrences are not in input order.
	Missing, Duplicates, Reordered int
	// Uncommitted: per input partition, records past the group's committed offset.
	Uncommitted map[int32]int64
	// Examples of each problem, for the failure message (a few of each).
	Problems []string
}

// Err is nil when nothing was lost, nothing reordered, every input committed and (with
// ExactlyOnce) nothing duplicated; otherwise an error listing what went wrong.
func (r *DeliveryReport) Err(exactlyOnce bool) error {
	bad := r.Missing > 0 || r.Reordered > 0 || len(r.Uncommitted) > 0 || (exactlyOnce && r.Duplicates > 0)
	if !bad {
		return nil
	}
	return fmt.Errorf("samsatest: delivery check: %d inputs, %d outputs: %d missing, %d reordered keys, %d duplicates, uncommitted %v:\n  %s",
		r.Inputs, r.Outputs, r.Missing, r.Reordered, r.Duplicates, r.Uncommitted, strings.Join(r.Problems, "\n  "))
}

// CheckDelivery reads Input and Output to their ends and compares them: every input's
// expected output present (nothing lost), per key in input order, counted duplicates,
// and the group's committed offsets equal to Input's end offsets. Call it once the
// pipeline is idle (every input handled).
func CheckDelivery(ctx context.Context, d Delivery) (*DeliveryReport, error) {
	ins, err := ReadAll(ctx, d.Brokers, d.Input, codec.Bytes(), codec.Bytes())
	if err != nil {
		return nil, err
	}
	outs, err := ReadAll(ctx, d.Brokers, d.Output, codec.Bytes(), codec.Bytes())
	if err != nil {
		return nil, err
	}
	rep := &DeliveryReport{Inputs: len(ins), Outputs: len(outs), Uncommitted: map[int32]int64{}}
	problem := func(format string, args ...any) {
		if len(rep.Problems) < 12 {
			rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		}
	}
	expect := d.Expect
	if expect == nil {
		expect = func(k, v []byte) ([]byte, []byte) { return k, v }
	}
	// Per output key, the expected values in input order.
	want := map[string][]string{}
	for _, in := range ins {
		k, v := expect(in.Key, in.Value)
		want[string(k)] = append(want[string(k)], string(v))
	}
	got := map[string][]string{}
	for _, out := range outs {
		got[string(out.Key)] = append(got[string(out.Key)], string(out.Value))
	}
	for k, wv := range want {
		pos := make(map[string]int, len(wv))
		for i, v := range wv {
			pos[v] = i
		}
		seen := map[string]int{}
		last := -1
		reordered := false
		for _, v := range got[k] {
			seen[v]++
			if seen[v] > 1 {
				rep.Duplicates++
				continue
			}
			i, ok := pos[v]
			if !ok {
				continue // not one of ours (another run's record): not judged
			}
			if i < last && !reordered {
				reordered = true
				rep.Reordered++
				problem("key %q: output %q came after %q, but was input before it", k, v, wv[last])
			}
			last = max(last, i)
		}
		for _, v := range wv {
			if seen[v] == 0 {
				rep.Missing++
				problem("key %q: value %q missing from %s", k, v, d.Output)
			}
		}
	}
	if d.Group != "" {
		if err := committedVsEnd(ctx, d, rep); err != nil {
			return nil, err
		}
		for p, n := range rep.Uncommitted {
			problem("%s[%d]: %d records past group %q's committed offset", d.Input, p, n, d.Group)
		}
	}
	return rep, nil
}

func committedVsEnd(ctx context.Context, d Delivery, rep *DeliveryReport) error {
	ac, err := admin.Dial(d.Brokers, nil, nil)
	if err != nil {
		return fmt.Errorf("samsatest: %w", err)
	}
	defer ac.Close()
	tps, err := ac.Partitions(ctx, d.Input)
	if err != nil {
		return fmt.Errorf("samsatest: %w", err)
	}
	ends, err := ac.ListOffsets(ctx, tps, admin.Latest)
	if err != nil {
		return fmt.Errorf("samsatest: end offsets of %q: %w", d.Input, err)
	}
	committed, err := ac.Committed(ctx, d.Group)
	if err != nil {
		return fmt.Errorf("samsatest: committed offsets of group %q: %w", d.Group, err)
	}
	for _, tp := range tps {
		if e, c := ends[tp], committed[tp]; e > c {
			rep.Uncommitted[tp.Partition] = e - c
		}
	}
	if len(rep.Uncommitted) == 0 {
		rep.Uncommitted = nil
	}
	return nil
}

// RequireDelivered waits up to timeout for CheckDelivery to pass (a pipeline catching
// up), then fails tb with the last report's problems.
func RequireDelivered(tb testing.TB, d Delivery, timeout time.Duration) *DeliveryReport {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		rep, err := CheckDelivery(ctx, d)
		cancel()
		if err == nil {
			if err = rep.Err(d.ExactlyOnce); err == nil {
				return rep
			}
		}
		last = err
		if time.Now().After(deadline) {
			tb.Fatalf("samsatest: not delivered after %s: %v", timeout, last)
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}
