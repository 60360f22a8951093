package samsatest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/samsa-go/samsa/distributed"
)

// Tracker records when each process of a distributed list runs, and where, to check the
// promise that matters: no process runs on two nodes at once. Wrap the list with Track
// and give the same wrapped list to every node.
type Tracker struct {
	mu   sync.Mutex
	runs map[int][]*Run
}

// Run is one execution of a process: on which node, with which fencing token, and when.
type Run struct {
	Process     int
	Node        string
	Token       int64
	Start, Stop time.Time // Stop is zero while it runs
}

// Track returns processes wrapped so that the Tracker records every run.
func Track(processes []distributed.Process) ([]distributed.Process, *Tracker) {
	t := &Tracker{runs: map[int][]*Run{}}
	out := make([]distributed.Process, len(processes))
	for i, p := range processes {
		out[i] = func(ctx context.Context) error {
			info, _ := distributed.InfoFrom(ctx)
			r := &Run{Process: i, Node: info.Node, Token: info.Token, Start: time.Now()}
			t.mu.Lock()
			t.runs[i] = append(t.runs[i], r)
			t.mu.Unlock()
			defer func() {
				t.mu.Lock()
				r.Stop = time.Now()
				t.mu.Unlock()
			}()
			return p(ctx)
		}
	}
	return out, t
}

// Runs returns every run of process i so far, in start order.
func (t *Tracker) Runs(i int) []Run {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Run, len(t.runs[i]))
	for k, r := range t.runs[i] {
		out[k] = *r
	}
	return out
}

// Running returns, per process, the node running it now ("" when none).
func (t *Tracker) Running(processes int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, processes)
	for i := range out {
		for _, r := range t.runs[i] {
			if r.Stop.IsZero() {
				out[i] = r.Node
			}
		}
	}
	return out
}

// Overlaps returns a description of every pair of runs of one process on different
// nodes whose times intersect (a process that ran twice at once); none is the promise.
// Runs on the same node never overlap (the node stops before it restarts), and are
// reported too if they do.
func (t *Tracker) Overlaps() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	idx := make([]int, 0, len(t.runs))
	for i := range t.runs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	now := time.Now()
	for _, i := range idx {
		runs := t.runs[i]
		for a := 0; a < len(runs); a++ {
			for b := a + 1; b < len(runs); b++ {
				ra, rb := runs[a], runs[b]
				aStop, bStop := ra.Stop, rb.Stop
				if aStop.IsZero() {
					aStop = now
				}
				if bStop.IsZero() {
					bStop = now
				}
				if ra.Start.Before(bStop) && rb.Start.Before(aStop) {
					out = append(out, fmt.Sprintf("process %d ran on %s (token %d, from %s) and on %s (token %d, from %s) at once for %s",
						i, ra.Node, ra.Token, ra.Start.Format("15:04:05.000"), rb.Node, rb.Token, rb.Start.Format("15:04:05.000"),
						minTime(aStop, bStop).Sub(maxTime(ra.Start, rb.Start))))
				}
			}
		}
	}
	return out
}

// Gaps returns, per hand-off of process i (consecutive runs on different nodes), how
// long it ran nowhere: the margin by which the old run stopped before the new one
// started.
func (t *Tracker) Gaps(i int) []time.Duration {
	runs := t.Runs(i)
	var out []time.Duration
	for k := 1; k < len(runs); k++ {
		if runs[k-1].Node != runs[k].Node && !runs[k-1].Stop.IsZero() {
			out = append(out, runs[k].Start.Sub(runs[k-1].Stop))
		}
	}
	return out
}

// String lists every run, for a failure message.
func (t *Tracker) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	idx := make([]int, 0, len(t.runs))
	for i := range t.runs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		for _, r := range t.runs[i] {
			stop := "running"
			if !r.Stop.IsZero() {
				stop = r.Stop.Format("15:04:05.000")
			}
			fmt.Fprintf(&b, "process %d on %s token %d: %s – %s\n", i, r.Node, r.Token, r.Start.Format("15:04:05.000"), stop)
		}
	}
	return b.String()
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
