package samsatest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

var (
	orders = []processor.Input[string, int64]{{Topic: "orders", Key: codec.String(), Value: codec.Int64()}}
	totals = processor.NewOutput("totals", codec.String(), codec.Int64())
)

// doubler sends twice each value, refuses negative values (permanently) and panics on 13.
var doubler = processor.HandlerFunc[string, int64](func(ctx context.Context, b *processor.Batch[string, int64]) error {
	for _, r := range b.Records {
		switch {
		case r.Value < 0:
			return processor.Permanent(fmt.Errorf("order %s: negative amount %d", r.Key, r.Value))
		case r.Value == 13:
			panic("unlucky")
		}
		if err := totals.Send(b, r.Key, 2*r.Value); err != nil {
			return err
		}
	}
	return nil
})

func rec(k string, v int64) processor.Record[string, int64] {
	return processor.Record[string, int64]{Key: k, Value: v}
}

func TestHandlerDriverSends(t *testing.T) {
	d, err := samsatest.NewHandlerDriver(orders, doubler, processor.Stop())
	require.NoError(t, err)
	res, err := d.Handle(t.Context(), rec("a", 1), rec("b", 2), rec("a", 3))
	require.NoError(t, err)
	require.NoError(t, res.Err)
	sent, err := samsatest.Outputs(res, totals)
	require.NoError(t, err)
	assert.Equal(t, []samsatest.Sent[string, int64]{{Key: "a", Value: 2}, {Key: "b", Value: 4}, {Key: "a", Value: 6}}, sent)
	assert.Equal(t, 1, res.Calls)
	assert.Empty(t, res.DeadLetters)
}

func TestHandlerDriverStopNamesTheRecord(t *testing.T) {
	d, err := samsatest.NewHandlerDriver(orders, doubler, processor.Stop())
	require.NoError(t, err)
	res, err := d.Handle(t.Context(), rec("a", 1), rec("b", -5))
	require.NoError(t, err)
	var pe *processor.Error
	require.ErrorAs(t, res.Err, &pe)
	assert.Equal(t, processor.StageHandle, pe.Stage)
	assert.Equal(t, "orders", pe.Topic)
	assert.Equal(t, int64(1), pe.Offset, "the failing record, found by handling the batch one record at a time")
	assert.ErrorContains(t, res.Err, "negative amount -5")
}

func TestHandlerDriverPanicCarriesStack(t *testing.T) {
	d, err := samsatest.NewHandlerDriver(orders, doubler, processor.Stop())
	require.NoError(t, err)
	res, err := d.Handle(t.Context(), rec("x", 13))
	require.NoError(t, err)
	require.True(t, res.Panicked(), "got %v", res.Err)
	assert.ErrorContains(t, res.Err, "unlucky")
	assert.Contains(t, fmt.Sprintf("%+v", res.Err), "handler_test.go", "the stack of the panic reaches the error")
}

// A permanent error skips Retry's retries; the batch is narrowed to the failing record,
// which alone is dead-lettered while the others' outputs are sent.
func TestHandlerDriverPermanentErrorSkipsRetries(t *testing.T) {
	var calls atomic.Int32
	h := processor.HandlerFunc[string, int64](func(ctx context.Context, b *processor.Batch[string, int64]) error {
		calls.Add(1)
		return doubler.Handle(ctx, b)
	})
	pol := processor.Retry(5, processor.Backoff{Initial: 1}, processor.DeadLetter("orders.dlq"))
	d, err := samsatest.NewHandlerDriver(orders, h, pol)
	require.NoError(t, err)
	res, err := d.Handle(t.Context(), rec("a", 1), rec("b", -5), rec("c", 3))
	require.NoError(t, err)
	require.NoError(t, res.Err)
	// One batch call, no retry, then one call per record.
	assert.Equal(t, 4, res.Calls)
	sent, err := samsatest.Outputs(res, totals)
	require.NoError(t, err)
	assert.Equal(t, []samsatest.Sent[string, int64]{{Key: "a", Value: 2}, {Key: "c", Value: 6}}, sent)
	require.Len(t, res.DeadLetters, 1)
	dl := res.DeadLetters[0]
	assert.Equal(t, processor.StageHandle, dl.Stage)
	assert.Equal(t, "orders", dl.Source)
	assert.Equal(t, int64(1), dl.Offset)
	assert.Contains(t, dl.Error, "negative amount -5")
	assert.Equal(t, "b", string(dl.Key))

	// A transient error is retried: five retries, then narrowing.
	flaky := errors.New("database unavailable")
	h2 := processor.HandlerFunc[string, int64](func(ctx context.Context, b *processor.Batch[string, int64]) error { return flaky })
	d2, err := samsatest.NewHandlerDriver(orders, h2, processor.Retry(2, processor.Backoff{Initial: 1}, processor.Skip()))
	require.NoError(t, err)
	res, err = d2.Handle(t.Context(), rec("a", 1), rec("b", 2))
	require.NoError(t, err)
	require.NoError(t, res.Err)
	assert.Equal(t, 3+2, res.Calls, "1 call + 2 retries, then one per record")
}

func TestHandlerDriverDecodeFailureDeadLettered(t *testing.T) {
	d, err := samsatest.NewHandlerDriver(orders, doubler, processor.DeadLetter("orders.dlq"))
	require.NoError(t, err)
	res, err := d.HandleRaw(t.Context(),
		processor.Message{Key: []byte("a"), Value: codecBytes(t, 4)},
		processor.Message{Key: []byte("b"), Value: []byte("not eight bytes")})
	require.NoError(t, err)
	require.NoError(t, res.Err)
	require.Len(t, res.DeadLetters, 1)
	assert.Equal(t, processor.StageDecode, res.DeadLetters[0].Stage)
	assert.Equal(t, "not eight bytes", string(res.DeadLetters[0].Value))
	assert.Len(t, res.To("totals"), 1)
}

func TestHandlerDriverRejectsUnknownTopic(t *testing.T) {
	d, err := samsatest.NewHandlerDriver(orders, doubler, processor.Stop())
	require.NoError(t, err)
	_, err = d.Handle(t.Context(), processor.Record[string, int64]{Topic: "ordres", Key: "a", Value: 1})
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), `"ordres"`), err.Error())
}

func codecBytes(t *testing.T, v int64) []byte {
	b, err := codec.Int64().Encode(v)
	require.NoError(t, err)
	return b
}

// A Batch built by hand is not a Sender: Send says what to use instead of crashing.
func TestHandBuiltBatchSendFails(t *testing.T) {
	err := totals.Send(&processor.Batch[string, int64]{}, "a", 1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "samsatest.HandlerDriver")
	assert.Error(t, totals.Send(nil, "a", 1))
}
