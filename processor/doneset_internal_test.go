package processor

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/internal/record"
)

func TestDoneSetRoundTrip(t *testing.T) {
	md := encodeDone(100, []int64{107, 101, 102, 103, 250, 108, 1_000_000})
	require.True(t, strings.HasPrefix(md, donePrefix), md)
	runs := decodeDone(100, md)
	assert.Equal(t, []doneRun{{101, 104}, {107, 109}, {250, 251}, {1_000_000, 1_000_001}}, runs)
	d := doneSkip{"in": runs}
	for off, want := range map[int64]bool{100: false, 101: true, 103: true, 104: false, 106: false, 107: true, 108: true, 109: false, 250: true, 999_999: false, 1_000_000: true} {
		assert.Equal(t, want, d.has(&record.Message{Topic: "in", Offset: off}), "offset %d", off)
	}
	assert.False(t, d.has(&record.Message{Topic: "other", Offset: 101}))

	assert.Empty(t, encodeDone(5, nil))
	assert.Nil(t, decodeDone(0, "samsa:applied=12"), "other metadata")
	assert.Nil(t, decodeDone(0, donePrefix+"!!"), "not base64")
	assert.Nil(t, decodeDone(0, donePrefix+"AA"), "a run of length 0")
}

// Past Kafka's metadata size the runs that do not fit are left out (handled again),
// never cut in the middle.
func TestDoneSetBounded(t *testing.T) {
	var offs []int64
	for i := range int64(5000) {
		offs = append(offs, 2*i) // 5000 runs of one
	}
	md := encodeDone(0, offs)
	assert.LessOrEqual(t, len(md), maxDoneMetadata)
	runs := decodeDone(0, md)
	require.NotEmpty(t, runs)
	assert.Less(t, len(runs), 5000)
	for i, r := range runs {
		assert.Equal(t, doneRun{int64(2 * i), int64(2*i + 1)}, r)
	}
}

// A unit counts as done only once its key's earlier units are: a next owner that skips
// what a commit recorded done never handles a key's record after a later one.
func TestDoneMarksKeepKeyOrder(t *testing.T) {
	u := newUnits[string, string](10, ByKey, &runner[string, string]{})
	f1, f2 := &flight{}, &flight{}
	msg := func(off int64) []record.Message { return []record.Message{{Topic: "in", Offset: off}} }
	k := unitKey{key: "k"}
	m1 := &doneMark{f: f1, key: k, inputs: msg(1), prevDone: true}
	m2 := &doneMark{f: f2, key: k, inputs: msg(5)}
	m1.next = m2
	u.marks[k] = m2
	other := &doneMark{f: f2, key: unitKey{key: "other"}, inputs: msg(6), prevDone: true}

	m2.acked = true
	u.markDone(m2)
	other.acked = true
	u.markDone(other)
	assert.Equal(t, [][]record.Message{msg(6)}, f2.doneUnits, "k's later unit waits for its earlier one; other keys do not")
	assert.Empty(t, f1.doneUnits)

	m1.acked = true
	u.markDone(m1)
	assert.Equal(t, [][]record.Message{msg(1)}, f1.doneUnits)
	assert.Equal(t, [][]record.Message{msg(6), msg(5)}, f2.doneUnits, "then both")
	assert.Empty(t, u.marks, "a key whose units are all done is forgotten")

	// A batch that settles counts its units done for the key's later ones, acknowledged
	// or not.
	f3, f4 := &flight{}, &flight{}
	m3 := &doneMark{f: f3, key: k, inputs: msg(10), prevDone: true}
	m4 := &doneMark{f: f4, key: k, inputs: msg(20), acked: true}
	m3.next = m4
	f3.marks = []*doneMark{m3}
	u.marks[k] = m4
	u.settled(f3)
	assert.Equal(t, [][]record.Message{msg(20)}, f4.doneUnits)
}
