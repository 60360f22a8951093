package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/processor"
)

// TestReset runs a checkpointed processor over two partitions of records stamped an hour
// apart (5 early, 5 late per partition) and then exercises reset: refused while the
// processor runs; a dry run that changes nothing; refused when it would leave the table
// claiming records to be read again; a reset to a time between the two halves that lands
// on offset 5; bad input refused with one line and nothing changed; and a reset to
// earliest with -clear-table after which the processor rebuilds the same sums (nothing
// counted twice).
func TestReset(t *testing.T) {
	brokers, redisAddr := realStack(t)
	topic, group, ns := stack.UniqueName("reset-in"), stack.UniqueName("reset-g"), stack.UniqueName("reset-ns")
	createTopic(t, brokers, topic, 2)
	early := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	late := early.Add(time.Hour)
	var msgs []*record.Message
	for p := range int32(2) {
		for i := range 10 {
			ts := early.Add(time.Duration(i) * time.Second)
			if i >= 5 {
				ts = late.Add(time.Duration(i) * time.Second)
			}
			msgs = append(msgs, int64Msg(topic, p, fmt.Sprintf("k%d", p), int64(i+1), ts))
		}
	}
	produceAll(t, brokers, msgs)

	tbl, _ := newTable(t, redisAddr, ns)
	runSum := func() *running {
		p, err := processor.New(testConfig(brokers, group, "reset-test"), sumInputs(topic), &summer{table: tbl}, processor.WithCheckpoint(tbl))
		require.NoError(t, err)
		return startProcessor(t, p)
	}
	all := map[record.TopicPartition]int64{{Topic: topic, Partition: 0}: 10, {Topic: topic, Partition: 1}: 10}
	live := runSum()
	waitCommitted(t, brokers, group, topic, all)

	// A live member: refused, nothing changed.
	_, stderr, code := samsa(t, brokers, "reset", "-group", group, "-topic", topic, "-to-earliest", "--execute")
	requireOneLine(t, code, stderr, 1, "live member")
	assert.Contains(t, stderr, "reset-test")
	require.NoError(t, live.stop())
	assert.Equal(t, all, committed(t, brokers, group), "a refused reset changed offsets")

	at := late.Add(-30 * time.Minute).Format(time.RFC3339)
	// Dry run: the plan, nothing changed.
	stdout, _, code := samsa(t, brokers, "reset", "-group", group, "-topic", topic, "-to-datetime", at)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "would move 2 partition(s)")
	assert.Contains(t, stdout, "dry run: nothing changed")
	assert.Regexp(t, topic+`\s+0\s+10\s+5\s+-5`, stdout)
	assert.Contains(t, stdout, "state tables: not checked")
	assert.Equal(t, all, committed(t, brokers, group), "a dry run changed offsets")

	// Explicit offsets, one past the end: moved to the end, and the plan says so. The
	// connection settings come from a properties file.
	props := filepath.Join(t.TempDir(), "client.properties")
	require.NoError(t, os.WriteFile(props, []byte("# the shared test broker\nbootstrap.servers="+brokers+"\nclient.id=samsa-ops\n"), 0o600))
	stdout, _, code = samsa(t, "", "reset", "-config", props, "-group", group, "-topic", topic, "-offsets", "0=3,1=99")
	require.Equal(t, 0, code)
	assert.Regexp(t, topic+`\s+0\s+10\s+3\s+-7\s+-\s+-`, stdout)
	assert.Regexp(t, topic+`\s+1\s+10\s+10\s+\+0\s+-\s+99 is past the end 10`, stdout)
	assert.Equal(t, all, committed(t, brokers, group), "a dry run changed offsets")

	// The table has applied everything: moving below it is refused.
	_, stderr, code = samsa(t, brokers, "reset", "-group", group, "-topic", topic, "-to-datetime", at, "-redis", redisAddr, "-table-namespace", ns, "--execute")
	requireOneLine(t, code, stderr, 1, "below the table's applied offset 10")
	assert.Equal(t, all, committed(t, brokers, group))

	// Bad input: one line naming the thing, nothing changed.
	for _, bad := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"reset", "-group", stack.UniqueName("nosuch"), "-topic", topic, "-to-earliest", "--execute"}, 1, "does not exist"},
		{[]string{"reset", "-group", group, "-topic", topic, "-to-datetime", "2026-13-45 noon", "--execute"}, 2, `malformed -to-datetime "2026-13-45 noon"`},
		{[]string{"reset", "-group", group, "-topic", stack.UniqueName("nosuch-topic"), "-to-earliest", "--execute"}, 1, "topic does not exist"},
		{[]string{"reset", "-group", group, "-topic", topic + ":7", "-to-earliest", "--execute"}, 1, "no partition 7"},
		{[]string{"reset", "-group", group, "-topic", topic, "-to-earliest", "-to-latest"}, 2, "exactly one of"},
	} {
		_, stderr, code := samsa(t, brokers, bad.args...)
		requireOneLine(t, code, stderr, bad.code, bad.want)
	}
	_, stderr, code = samsa(t, "", "reset", "-brokers", "127.0.0.1:1", "-timeout", "2s", "-group", group, "-topic", topic, "-to-earliest", "--execute")
	requireOneLine(t, code, stderr, 1, "brokers unreachable: no answer from 127.0.0.1:1")
	assert.Equal(t, all, committed(t, brokers, group), "bad input changed offsets")

	// Execute the reset to the time: offset 5, the first late record, in both partitions.
	stdout, _, code = samsa(t, brokers, "reset", "-group", group, "-topic", topic, "-to-datetime", at, "--execute", "-o", "json")
	require.Equal(t, 0, code)
	var plan resetPlan
	require.NoError(t, json.Unmarshal([]byte(stdout), &plan))
	assert.True(t, plan.Executed)
	five := map[record.TopicPartition]int64{{Topic: topic, Partition: 0}: 5, {Topic: topic, Partition: 1}: 5}
	assert.Equal(t, five, committed(t, brokers, group))

	// To earliest, clearing the table: the processor rebuilds the sums from the first
	// record, so each key's sum is 1+...+10 = 55 from 10 records, not more.
	stdout, _, code = samsa(t, brokers, "reset", "-group", group, "-topic", topic, "-to-earliest", "-redis", redisAddr, "-table-namespace", ns, "-clear-table", "--execute")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "applied 10: clear")
	zero := map[record.TopicPartition]int64{{Topic: topic, Partition: 0}: 0, {Topic: topic, Partition: 1}: 0}
	assert.Equal(t, zero, committed(t, brokers, group))
	v, found, err := tbl.Partition(0).Get(context.Background(), "sum/k0")
	require.NoError(t, err)
	assert.False(t, found, "table partition 0 not cleared (sum %d)", v)

	live = runSum()
	waitCommitted(t, brokers, group, topic, all)
	require.NoError(t, live.stop())
	fresh := tbl.Fork()
	for p := range int32(2) {
		key := fmt.Sprintf("k%d", p)
		vals, found, err := fresh.Partition(p).GetMany(context.Background(), []string{"sum/" + key, "cnt/" + key})
		require.NoError(t, err)
		require.Equal(t, []bool{true, true}, found)
		assert.Equal(t, []int64{55, 10}, vals, "partition %d: sum and count after the rebuild", p)
		next, err := fresh.Applied(context.Background(), topic, p)
		require.NoError(t, err)
		assert.EqualValues(t, 10, next)
	}
}
