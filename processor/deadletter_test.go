package processor_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/testwait"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

// A batch some of whose outputs the broker refuses: under DeadLetter only the inputs
// whose outputs failed go to the dead-letter topic; the others' outputs are in the output
// topic and their inputs are not dead-lettered (a redrive would duplicate them).
func TestDeadLetterOnlyInputsWhoseOutputsFailed(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a processor on the in-process broker")
	}
	b := samsatest.NewBroker(t, samsatest.Topic{Name: "in", Partitions: 1}, samsatest.Topic{Name: "out", Partitions: 1},
		samsatest.Topic{Name: "out.special", Partitions: 1}, samsatest.Topic{Name: "in.dlq", Partitions: 1})
	in := processor.NewOutput("in", codec.String(), codec.String())
	out := processor.NewOutput("out", codec.String(), codec.String())
	special := processor.NewOutput("out.special", codec.String(), codec.String())
	var recs []samsatest.KV[string, string]
	for i := range 10 {
		recs = append(recs, samsatest.KV[string, string]{Key: fmt.Sprintf("k%d", i), Value: fmt.Sprintf("v%d", i)})
	}
	recs[3].Value, recs[7].Value = "special-3", "special-7" // these two go to out.special
	samsatest.Produce(t, b.Addr(), in, recs...)
	wait := b.FailProduce("out.special", -1, false) // every produce to out.special is refused

	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: b.Addr()}, Group: "dl", BatchWait: 200 * time.Millisecond, ErrorPolicy: processor.DeadLetter("in.dlq")},
		[]processor.Input[string, string]{{Topic: "in", Key: codec.String(), Value: codec.String()}},
		processor.HandlerFunc[string, string](func(ctx context.Context, bt *processor.Batch[string, string]) error {
			for _, r := range bt.Records {
				o := out
				if strings.HasPrefix(r.Value, "special") {
					o = special
				}
				if err := o.Send(bt, r.Key, r.Value); err != nil {
					return err
				}
			}
			return nil
		}))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	require.NoError(t, wait.Wait(ctx))

	var dls []processor.Record[string, string]
	testwait.ForNoError(t, 30*time.Second, "two dead letters and the input committed", func() error {
		dls, err = samsatest.ReadAll(ctx, b.Addr(), "in.dlq", codec.String(), codec.String())
		if c := b.Committed("dl", "in"); err != nil || len(dls) < 2 || len(c) != 1 || c[0] != 10 {
			return fmt.Errorf("dead letters %v (%v), committed %v", dls, err, c)
		}
		return nil
	})
	stop()
	require.NoError(t, <-done)

	var dlKeys []string
	for _, r := range dls {
		dlKeys = append(dlKeys, r.Key)
	}
	assert.ElementsMatch(t, []string{"k3", "k7"}, dlKeys, "only the inputs whose outputs failed")
	outs, err := samsatest.ReadAll(ctx, b.Addr(), "out", codec.String(), codec.String())
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, r := range outs {
		seen[r.Key] = true
	}
	assert.Len(t, seen, 8, "the eight other outputs were produced")
	for _, k := range dlKeys {
		assert.False(t, seen[k], "%s both dead-lettered and produced", k)
	}
}
