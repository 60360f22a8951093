package integration

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
)

// TestScaleFault256Partitions runs one at-least-once processor (copy worker, built
// without the race detector, in its own process) through a preloaded backlog of 200,000
// keyed records on 256 partitions, and the same backlog on 8 partitions for comparison,
// on the shared broker. Each run must process everything (committed == end on every
// partition), lose nothing and keep per-key order. It reports throughput (records per
// second, from the first commit to the last, so the group join is not counted) and the
// time to the first commit. It is in the fault suite (`make test-fault`), not in `make
// test`: it is a scale check, not a unit of correctness. Figures only; nothing is
// asserted about speed.
func TestScaleFault256Partitions(t *testing.T) {
	harness.RequireFaultSuite(t)
	brokers := stack.KafkaBrokers(t)
	bin := harness.Build(t, "./worker")
	var lines []string
	for _, partitions := range []int{8, 256} {
		t.Run(fmt.Sprint(partitions), func(t *testing.T) {
			lines = append(lines, scaleRun(t, brokers, bin, partitions, 200_000))
		})
	}
	for _, l := range lines {
		t.Log(l)
	}
}

func scaleRun(t *testing.T, brokers, bin string, partitions, n int) string {
	in, out, group := stack.UniqueName("scale-in"), stack.UniqueName("scale-out"), stack.UniqueName("scale")
	harness.CreateTopic(t, brokers, in, partitions, 1)
	harness.CreateTopic(t, brokers, out, partitions, 1)
	t.Cleanup(func() {
		ac := harness.NewAdmin(t, brokers)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ac.DeleteTopics(ctx, []string{in, out})
	})
	keys := 4 * partitions
	loadStart := time.Now()
	sp := harness.StartSeqProducer(t, brokers, in, partitions, keys, n, 0)
	require.NoError(t, sp.Wait(3*time.Minute), "preloading the backlog")
	load := time.Since(loadStart)
	ends := harness.EndOffsets(t, brokers, in, partitions)

	logPath := harness.WorkerLog(t, "copy worker")
	start := time.Now()
	w := harness.StartWorker(t, bin, logPath, "-mode", "copy", "-brokers", brokers, "-group", group, "-in", in, "-out", out,
		"-batch", "500", "-session", "10s", "-heartbeat", "1s")
	probe := harness.NewProbe(brokers, group, in, partitions)
	var first time.Time
	var atFirst int64
	deadline := time.Now().Add(5 * time.Minute)
	for {
		require.True(t, w.Running(), "copy worker exited: %s", harness.ExitDesc(w))
		c, err := probe.Committed()
		if err == nil {
			if p := harness.Progress(c); p > 0 && first.IsZero() {
				first, atFirst = time.Now(), p
			}
			done := true
			for p, e := range ends {
				if c[p] != e {
					done = false
				}
			}
			if done {
				break
			}
		}
		require.True(t, time.Now().Before(deadline), "committed offsets did not reach the end within 5m: %v", c)
		time.Sleep(100 * time.Millisecond)
	}
	end := time.Now()
	code, exited := w.Signal(syscall.SIGTERM, time.Minute)
	require.True(t, exited)
	assert.Equal(t, 0, code, "copy worker exit code after SIGTERM")

	inputs := harness.ReadTopic(t, brokers, in, partitions, 2*time.Minute)
	outputs := harness.ReadTopic(t, brokers, out, partitions, 2*time.Minute)
	s := harness.TallySeq(inputs, outputs)
	assert.Equal(t, n, len(inputs))
	assert.Zero(t, s.Lost, "lost (first: %v)", s.Missing)
	assert.Zero(t, s.Unexpected)
	assert.Zero(t, s.OrderViolations, "per-key order")
	steady := float64(int64(n)-atFirst) / end.Sub(first).Seconds()
	return strings.Join([]string{
		fmt.Sprintf("scale: partitions=%d records=%d", partitions, n),
		fmt.Sprintf("records_per_s=%.0f (first to last commit) %.0f (worker start to last commit)", steady, float64(n)/end.Sub(start).Seconds()),
		fmt.Sprintf("first_commit_after=%s total=%s preload=%s", first.Sub(start).Round(time.Millisecond), end.Sub(start).Round(time.Millisecond), load.Round(time.Millisecond)),
		fmt.Sprintf("lost=%d dups=%d key_order_violations=%d", s.Lost, s.Dups, s.OrderViolations),
	}, " ")
}
