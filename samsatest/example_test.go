package samsatest_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

// A handler's unit test: records in, typed outputs and dead letters out, no broker.
func ExampleHandlerDriver() {
	inputs := []processor.Input[string, string]{{Topic: "words", Key: codec.String(), Value: codec.String()}}
	upper := processor.NewOutput("words.upper", codec.String(), codec.String())
	h := processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
		for _, r := range b.Records {
			if r.Value == "" {
				return processor.Permanent(fmt.Errorf("word %s is empty", r.Key))
			}
			if err := upper.Send(b, r.Key, strings.ToUpper(r.Value)); err != nil {
				return err
			}
		}
		return nil
	})

	d, err := samsatest.NewHandlerDriver(inputs, h, processor.DeadLetter("words.dlq"))
	if err != nil {
		panic(err)
	}
	res, err := d.Handle(context.Background(),
		processor.Record[string, string]{Key: "1", Value: "kafka"},
		processor.Record[string, string]{Key: "2", Value: ""},
		processor.Record[string, string]{Key: "3", Value: "samsa"})
	if err != nil {
		panic(err)
	}
	sent, _ := samsatest.Outputs(res, upper)
	for _, s := range sent {
		fmt.Println(s.Key, s.Value)
	}
	for _, dl := range res.DeadLetters {
		fmt.Printf("dead letter: %s@%d %s: %s\n", dl.Source, dl.Offset, dl.Stage, dl.Error)
	}
	// Output:
	// 1 KAFKA
	// 3 SAMSA
	// dead letter: words@1 handle: word 2 is empty
}

// A processor on the in-process broker: produce typed records, run it, read its output.
func ExampleBroker() {
	b, err := samsatest.StartBroker(samsatest.Topic{Name: "numbers", Partitions: 2}, samsatest.Topic{Name: "doubled", Partitions: 2})
	if err != nil {
		panic(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	numbers := processor.NewOutput("numbers", codec.String(), codec.Int64())
	doubled := processor.NewOutput("doubled", codec.String(), codec.Int64())
	if err := samsatest.ProduceContext(ctx, b.Addr(), numbers,
		samsatest.KV[string, int64]{Key: "a", Value: 1}, samsatest.KV[string, int64]{Key: "b", Value: 2}); err != nil {
		panic(err)
	}

	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: b.Addr()}, Group: "doubler"},
		[]processor.Input[string, int64]{{Topic: "numbers", Key: codec.String(), Value: codec.Int64()}},
		processor.HandlerFunc[string, int64](func(ctx context.Context, bt *processor.Batch[string, int64]) error {
			for _, r := range bt.Records {
				if err := doubled.Send(bt, r.Key, 2*r.Value); err != nil {
					return err
				}
			}
			return nil
		}))
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()

	for {
		out, err := samsatest.ReadAll(ctx, b.Addr(), "doubled", codec.String(), codec.Int64())
		if err != nil {
			panic(err)
		}
		if len(out) == 2 {
			sum := out[0].Value + out[1].Value
			fmt.Println("records:", len(out), "sum:", sum)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	fmt.Println("run:", <-done)
	// Output:
	// records: 2 sum: 6
	// run: <nil>
}
