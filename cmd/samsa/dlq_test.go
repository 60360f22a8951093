package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/processor"
)

// TestDLQRedrive dead-letters 50 records with a broken handler, lists them with their
// decoded headers and filters, then fixes the handler and redrives them: a dry run sends
// nothing; a redrive of one source partition and then of all sends each dead letter
// exactly once (the second skips the first's); every record is processed once; and a
// further redrive moves nothing.
func TestDLQRedrive(t *testing.T) {
	brokers, _ := realStack(t)
	in, dlq, group := stack.UniqueName("dlq-in"), stack.UniqueName("dlq-dead"), stack.UniqueName("dlq-g")
	createTopic(t, brokers, in, 3)
	createTopic(t, brokers, dlq, 2)
	var msgs []*record.Message
	for i := range 50 {
		msgs = append(msgs, &record.Message{Topic: in, Partition: -1, Key: []byte(fmt.Sprintf("r%02d", i)), Value: []byte("v"), Timestamp: time.Now()})
	}
	produceAll(t, brokers, msgs)
	inputEnds := endOffsets(t, brokers, in)

	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	processed := map[string]int{}
	h := processor.HandlerFunc[string, string](func(_ context.Context, b *processor.Batch[string, string]) error {
		if broken.Load() {
			return errors.New("price service said no")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, r := range b.Records {
			processed[r.Key]++
		}
		return nil
	})
	start := func() *running {
		cfg := testConfig(brokers, group, "dlq-test")
		cfg.ErrorPolicy = processor.DeadLetter(dlq)
		p, err := processor.New(cfg, []processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}}, h)
		require.NoError(t, err)
		return startProcessor(t, p)
	}
	live := start()
	waitCommitted(t, brokers, group, in, inputEnds)
	require.NoError(t, live.stop())

	// list: every dead letter with its headers decoded; filters narrow it.
	stdout, _, code := samsa(t, brokers, "dlq", "list", "-topic", dlq, "-o", "json")
	require.Equal(t, 0, code)
	var listed struct {
		DeadLetters []deadLetter `json:"dead_letters"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &listed))
	require.Len(t, listed.DeadLetters, 50)
	perPartition := map[int32]int{}
	for _, d := range listed.DeadLetters {
		assert.Equal(t, "price service said no", d.Error)
		assert.Equal(t, "handle", d.Stage)
		assert.Equal(t, in, d.SourceTopic)
		assert.Equal(t, group, d.Group)
		assert.WithinDuration(t, time.Now(), d.SourceTime, time.Minute)
		perPartition[d.SourcePartition]++
	}
	require.Len(t, perPartition, 3, "the keys spread over the 3 input partitions")
	stdout, _, code = samsa(t, brokers, "dlq", "list", "-topic", dlq, "-source-partition", "0", "-stage", "handle", "-error", "said no")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, fmt.Sprintf("%d dead letter(s) match", perPartition[0]))
	stdout, _, _ = samsa(t, brokers, "dlq", "list", "-topic", dlq, "-stage", "decode")
	assert.Contains(t, stdout, "0 dead letter(s) match")
	stdout, _, _ = samsa(t, brokers, "dlq", "list", "-topic", dlq, "-until", time.Now().Add(-time.Hour).Format(time.RFC3339))
	assert.Contains(t, stdout, "0 dead letter(s) match")
	_, stderr, code := samsa(t, brokers, "dlq", "list", "-topic", dlq, "-since", "last tuesday")
	requireOneLine(t, code, stderr, 2, `malformed -since "last tuesday"`)

	// The handler is fixed and the processor runs again.
	broken.Store(false)
	live = start()

	// A dry run sends nothing.
	stdout, _, code = samsa(t, brokers, "dlq", "redrive", "-topic", dlq)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "50 chosen, 0 already redriven (skipped), 50 would be sent")
	assert.Equal(t, inputEnds, endOffsets(t, brokers, in), "a dry run produced")

	// One source partition, then all: each dead letter is sent once.
	stdout, _, code = samsa(t, brokers, "dlq", "redrive", "-topic", dlq, "-source-partition", "0", "--execute")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, fmt.Sprintf("%d chosen, 0 already redriven (skipped), %d sent", perPartition[0], perPartition[0]))
	stdout, _, code = samsa(t, brokers, "dlq", "redrive", "-topic", dlq, "--execute", "-o", "json")
	require.Equal(t, 0, code)
	var res redriveResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assert.Len(t, res.Letters, 50-perPartition[0], "the letters sent are listed")
	res.Letters = nil
	assert.Equal(t, redriveResult{Topic: dlq, Executed: true, Chosen: 50, Already: perPartition[0], Sent: 50 - perPartition[0], Targets: []string{in}}, res)

	// Each redriven record went back to its source partition and is processed once.
	ends := endOffsets(t, brokers, in)
	for tp, end := range ends {
		assert.Equal(t, inputEnds[tp]+int64(perPartition[tp.Partition]), end, "partition %d got its own dead letters back", tp.Partition)
	}
	waitCommitted(t, brokers, group, in, ends)
	mu.Lock()
	got := maps.Clone(processed)
	mu.Unlock()
	require.Len(t, got, 50)
	for k, n := range got {
		assert.Equal(t, 1, n, "record %s processed %d times", k, n)
	}

	// A further redrive moves nothing.
	stdout, _, code = samsa(t, brokers, "dlq", "redrive", "-topic", dlq, "--execute")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "50 chosen, 50 already redriven (skipped), 0 sent")
	assert.Equal(t, ends, endOffsets(t, brokers, in))
	require.NoError(t, live.stop())
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, got, processed)
	// To another topic (partitioned by key): once, then nothing.
	other := stack.UniqueName("dlq-other")
	createTopic(t, brokers, other, 2)
	stdout, _, code = samsa(t, brokers, "dlq", "redrive", "-topic", dlq, "-to", other, "-source-partition", "1", "--execute")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, fmt.Sprintf("%d chosen, 0 already redriven (skipped), %d sent to %s", perPartition[1], perPartition[1], other))
	stdout, _, code = samsa(t, brokers, "dlq", "redrive", "-topic", dlq, "-to", other, "-source-partition", "1", "--execute")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, fmt.Sprintf("%d chosen, %d already redriven (skipped), 0 sent", perPartition[1], perPartition[1]))
	assert.EqualValues(t, perPartition[1], total(endOffsets(t, brokers, other)))
	_, stderr, code = samsa(t, brokers, "dlq", "redrive", "-topic", dlq, "-to", stack.UniqueName("nosuch"), "--execute")
	requireOneLine(t, code, stderr, 1, "redrive target: admin: topic does not exist")
}

// TestDLQValuesAndCopies: list shows keys and values (text when printable, else by size,
// with -o json carrying them, base64 when not text); three source records dead-lettered
// by two groups (six dead letters, as after a reset) are redriven once each: the dry run
// lists the three it would send, the redrive sends three, a second sends none, and
// -all-copies would send the other three.
func TestDLQValuesAndCopies(t *testing.T) {
	brokers, _ := realStack(t)
	in, dlq := stack.UniqueName("dlqv-in"), stack.UniqueName("dlqv-dead")
	createTopic(t, brokers, in, 1)
	createTopic(t, brokers, dlq, 1)
	binary := []byte{0xff, 0x00, 0x01}
	produceAll(t, brokers, []*record.Message{
		{Topic: in, Partition: 0, Key: []byte("order-1"), Value: []byte(`{"total": 42}`), Timestamp: time.Now()},
		{Topic: in, Partition: 0, Key: binary, Value: binary, Timestamp: time.Now()},
		{Topic: in, Partition: 0, Key: nil, Value: []byte("line one\nline two"), Timestamp: time.Now()},
	})
	inputEnds := endOffsets(t, brokers, in)
	for _, group := range []string{stack.UniqueName("dlqv-a"), stack.UniqueName("dlqv-b")} {
		cfg := testConfig(brokers, group, "dlqv-test")
		cfg.ErrorPolicy = processor.DeadLetter(dlq)
		p, err := processor.New(cfg, []processor.Input[[]byte, []byte]{{Topic: in, Key: codec.Bytes(), Value: codec.Bytes()}},
			processor.HandlerFunc[[]byte, []byte](func(context.Context, *processor.Batch[[]byte, []byte]) error {
				return errors.New("no price")
			}))
		require.NoError(t, err)
		live := startProcessor(t, p)
		waitCommitted(t, brokers, group, in, inputEnds)
		require.NoError(t, live.stop())
	}

	stdout, _, code := samsa(t, brokers, "dlq", "list", "-topic", dlq)
	require.Equal(t, 0, code)
	t.Logf("dlq list:\n%s", stdout)
	assert.Contains(t, stdout, "VALUE")
	assert.Contains(t, stdout, `{"total": 42}`)
	assert.Contains(t, stdout, "(3 bytes)")
	assert.Contains(t, stdout, "line one line two", "a value's line breaks are shown as spaces")
	assert.Contains(t, stdout, "(null)")
	stdout, _, code = samsa(t, brokers, "dlq", "list", "-topic", dlq, "-o", "json")
	require.Equal(t, 0, code)
	var listed struct {
		DeadLetters []map[string]any `json:"dead_letters"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &listed))
	require.Len(t, listed.DeadLetters, 6)
	byOffset := map[float64]map[string]any{}
	for _, d := range listed.DeadLetters {
		byOffset[d["source_offset"].(float64)] = d
	}
	assert.Equal(t, "order-1", byOffset[0]["key"])
	assert.Equal(t, `{"total": 42}`, byOffset[0]["value"])
	assert.Equal(t, "/wAB", byOffset[1]["key_base64"], "a binary key in base64")
	assert.Equal(t, "/wAB", byOffset[1]["value_base64"])
	assert.Equal(t, true, byOffset[2]["key_null"])
	assert.Equal(t, "line one\nline two", byOffset[2]["value"])

	// Six dead letters of three source records: the dry run lists three.
	stdout, _, code = samsa(t, brokers, "dlq", "redrive", "-topic", dlq)
	require.Equal(t, 0, code)
	t.Logf("dry run:\n%s", stdout)
	assert.Contains(t, stdout, "6 chosen, 0 already redriven (skipped), 3 would be sent to "+in+"; 3 more dead letter(s) of a source record sent once")
	for o := range 3 {
		assert.Contains(t, stdout, fmt.Sprintf("%s[0]@%d", in, o))
	}
	assert.Equal(t, inputEnds, endOffsets(t, brokers, in), "a dry run produced")
	stdout, _, code = samsa(t, brokers, "dlq", "redrive", "-topic", dlq, "--execute")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "6 chosen, 0 already redriven (skipped), 3 sent to "+in)
	stdout, _, code = samsa(t, brokers, "dlq", "redrive", "-topic", dlq, "--execute", "-o", "json")
	require.Equal(t, 0, code)
	var res redriveResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assert.Equal(t, 6, res.Already, "each source has a copy in the target: none of its dead letters is sent again")
	assert.Zero(t, res.Sent)
	stdout, _, code = samsa(t, brokers, "dlq", "redrive", "-topic", dlq, "-all-copies")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "6 chosen, 3 already redriven (skipped), 3 would be sent", "-all-copies skips only the dead letters themselves redriven")
	ends := endOffsets(t, brokers, in)
	for tp, end := range ends {
		assert.Equal(t, inputEnds[tp]+3, end, "three records redriven into %v", tp)
	}
}
