package processor

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/record"
)

// The records whose state effects a previous owner left owed: committed by a
// checkpointed processor and not applied, from the committing transaction's first input
// offset (or the applied offset, if later) to the committed offset.
func TestOwedSpans(t *testing.T) {
	off := func(topic string, o int64, md string) record.Offset {
		return record.Offset{TopicPartition: record.TopicPartition{Topic: topic, Partition: 3}, Offset: o, Metadata: md}
	}
	md := func(applied, from int64) string {
		return appliedPrefix + itoa(applied) + fromSep + itoa(from)
	}
	for _, tc := range []struct {
		name      string
		committed []record.Offset
		applied   map[string]int64
		want      []admin.Range
	}{
		{"applied up to the commit", []record.Offset{off("a", 100, md(80, 90))}, map[string]int64{"a": 100}, nil},
		{"applied beyond it (an at-least-once run)", []record.Offset{off("a", 100, appliedPrefix+"100")}, map[string]int64{"a": 120}, nil},
		{"no metadata: not a checkpointed processor's", []record.Offset{off("a", 100, "")}, map[string]int64{"a": 0}, nil},
		{"the last transaction's effects owed", []record.Offset{off("a", 100, md(80, 90))}, map[string]int64{"a": 90},
			[]admin.Range{{TopicPartition: record.TopicPartition{Topic: "a", Partition: 3}, From: 90, To: 100}}},
		{"offsets without records before the transaction (markers) are not read",
			[]record.Offset{off("a", 100, md(80, 92))}, map[string]int64{"a": 90},
			[]admin.Range{{TopicPartition: record.TopicPartition{Topic: "a", Partition: 3}, From: 92, To: 100}}},
		{"partly made by an owner stopped during its catch-up", []record.Offset{off("a", 100, md(80, 90))}, map[string]int64{"a": 95},
			[]admin.Range{{TopicPartition: record.TopicPartition{Topic: "a", Partition: 3}, From: 95, To: 100}}},
		{"metadata of an older build (no first offset)", []record.Offset{off("a", 100, appliedPrefix+"80")}, map[string]int64{"a": 85},
			[]admin.Range{{TopicPartition: record.TopicPartition{Topic: "a", Partition: 3}, From: 85, To: 100}}},
		{"co-partitioned inputs, each its own", []record.Offset{off("a", 100, md(80, 90)), off("b", 50, md(40, 45))},
			map[string]int64{"a": 100, "b": 40}, []admin.Range{{TopicPartition: record.TopicPartition{Topic: "b", Partition: 3}, From: 45, To: 50}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, owedSpans(tc.committed, tc.applied, 3))
		})
	}
}

// The applied offset is read back from metadata that also records the first offset.
func TestRecordedAppliedWithFrom(t *testing.T) {
	n, ok := recordedApplied(appliedPrefix + "80" + fromSep + "90")
	assert.True(t, ok)
	assert.Equal(t, int64(80), n)
	f, ok := recordedFrom(appliedPrefix + "80" + fromSep + "90")
	assert.True(t, ok)
	assert.Equal(t, int64(90), f)
	_, ok = recordedFrom(appliedPrefix + "80")
	assert.False(t, ok)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
