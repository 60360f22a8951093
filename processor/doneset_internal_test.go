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
