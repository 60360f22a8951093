package main

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/distributed"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/internal/testwait"
	"github.com/samsa-go/samsa/processor"
)

var update = flag.Bool("update", false, "rewrite the golden files of the status tests")

// golden compares got, normalised, with testdata/name (rewritten with -update).
// Normalising replaces each of the given names with its placeholder, hosts and member
// ids with HOST and MEMBER-ID, times with TIME, and runs of spaces with one space (the
// column widths follow the names' lengths).
func golden(t *testing.T, name, got string, names map[string]string) {
	t.Helper()
	for real, placeholder := range names {
		got = strings.ReplaceAll(got, real, placeholder)
	}
	got = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`).ReplaceAllString(got, "TIME")
	got = regexp.MustCompile(`/\d+\.\d+\.\d+\.\d+|/[0-9a-f:]+\b`).ReplaceAllString(got, "HOST")
	got = regexp.MustCompile(`(CLIENT-[A-Z]+)-[0-9a-f-]{36}`).ReplaceAllString(got, "MEMBER-ID")
	got = regexp.MustCompile(` {2,}`).ReplaceAllString(got, " ")
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "golden file (run go test -run %s -update to create it)", t.Name())
	assert.Equal(t, string(want), got)
}

// TestStatusGroup: status of a running processor group, as text (golden) and JSON.
func TestStatusGroup(t *testing.T) {
	brokers, _ := realStack(t)
	topic, group := stack.UniqueName("status-in"), stack.UniqueName("status-g")
	createTopic(t, brokers, topic, 3)
	var msgs []*record.Message
	for i := range 7 {
		msgs = append(msgs, &record.Message{Topic: topic, Partition: int32(i % 3), Value: []byte("x"), Timestamp: time.Now()})
	}
	produceAll(t, brokers, msgs)
	// The processor handles partition 2's first record only and hangs on its second: lag 1 there.
	h := processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
		if b.Partition == 2 && b.Records[len(b.Records)-1].Offset > 0 {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	cfg := testConfig(brokers, group, "CLIENT-A")
	cfg.BatchSize = 1
	cfg.StopTimeout = time.Second
	p, err := processor.New(cfg, []processor.Input[string, string]{{Topic: topic, Key: codec.String(), Value: codec.String()}}, h)
	require.NoError(t, err)
	live := startProcessor(t, p)
	want := map[record.TopicPartition]int64{{Topic: topic, Partition: 0}: 3, {Topic: topic, Partition: 1}: 2, {Topic: topic, Partition: 2}: 1}
	waitCommitted(t, brokers, group, topic, want)
	testwait.For(t, 30*time.Second, "the member is stable", func() bool {
		out, _, _ := samsa(t, brokers, "status", "-group", group, "-o", "json")
		var g groupJSON
		return json.Unmarshal([]byte(out), &g) == nil && g.State == "Stable" && len(g.Members) == 1 && len(g.Members[0].Assignment) == 3
	})

	stdout, _, code := samsa(t, brokers, "status", "-group", group)
	require.Equal(t, 0, code)
	golden(t, "status-group.golden", stdout, map[string]string{topic: "TOPIC", group: "GROUP"})

	stdout, _, code = samsa(t, brokers, "status", "-group", group, "-o", "json")
	require.Equal(t, 0, code)
	var g groupJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &g))
	require.Len(t, g.Partitions, 3)
	assert.EqualValues(t, 1, *g.Partitions[2].Lag)
	assert.Equal(t, "CLIENT-A@"+g.Members[0].Host, g.Partitions[2].Owner)
	require.NoError(t, live.stop())

	// Bad input: one line, non-zero.
	_, stderr, code := samsa(t, brokers, "status", "-group", stack.UniqueName("nosuch"))
	requireOneLine(t, code, stderr, 1, "does not exist")
	_, stderr, code = samsa(t, "", "status", "-brokers", "127.0.0.1:1", "-timeout", "2s", "-group", group)
	requireOneLine(t, code, stderr, 1, "brokers unreachable")
	_, stderr, code = samsa(t, brokers, "status", "-group", group, "-distributed", "x")
	requireOneLine(t, code, stderr, 2, "exactly one of -group and -distributed")
}

// TestStatusDistributed: status of a distributed name with one node over three slices,
// from the technical topic's claim records (golden), and after the node stopped.
func TestStatusDistributed(t *testing.T) {
	brokers, _ := realStack(t)
	name := stack.UniqueName("status-dist")
	node, err := distributed.New(distributed.Config{Membership: distributed.Membership{Brokers: brokers, StopTimeout: 5 * time.Second, SessionTimeout: 6 * time.Second}, Partitions: 3, NodeID: "node-a"})
	require.NoError(t, err)
	var procs []distributed.Process
	for range 4 {
		procs = append(procs, func(ctx context.Context) error { <-ctx.Done(); return nil })
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- node.Run(ctx, name, procs) }()
	stop := func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("node did not stop within 30s")
		}
	}
	defer func() {
		if ctx.Err() == nil {
			stop()
		}
	}()
	testwait.For(t, 30*time.Second, "three slices running and assigned", func() bool {
		out, _, code := samsa(t, brokers, "status", "-distributed", name, "-o", "json")
		var d distJSON
		if code != 0 || json.Unmarshal([]byte(out), &d) != nil || len(d.Slices) != 3 {
			return false
		}
		for _, s := range d.Slices {
			if s.State != "running" || !s.Assigned {
				return false
			}
		}
		return true
	})
	stdout, _, code := samsa(t, brokers, "status", "-distributed", name)
	require.Equal(t, 0, code)
	golden(t, "status-distributed.golden", stdout, map[string]string{name: "NAME"})

	stop()
	testwait.For(t, 30*time.Second, "slices released", func() bool {
		out, _, _ := samsa(t, brokers, "status", "-distributed", name, "-o", "json")
		var d distJSON
		if json.Unmarshal([]byte(out), &d) != nil || len(d.Slices) != 3 {
			return false
		}
		for _, s := range d.Slices {
			if s.State != "released" || s.Assigned || s.Node != "node-a" {
				return false
			}
		}
		return true
	})
	_, stderr, code := samsa(t, brokers, "status", "-distributed", stack.UniqueName("nosuch"))
	requireOneLine(t, code, stderr, 1, "technical topic")
}
