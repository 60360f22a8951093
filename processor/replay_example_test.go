package processor_test

import (
	"context"
	"fmt"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

// A replay handles the records below its end offsets, publishes nothing with
// SuppressOutputs, and Run returns nil once it got there. In production the end offsets
// come from `samsa replay plan` (a Replay as JSON).
func ExampleWithReplay() {
	b, err := samsatest.StartBroker(samsatest.Topic{Name: "words", Partitions: 1}, samsatest.Topic{Name: "lengths", Partitions: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	var words []samsatest.KV[string, string]
	for _, w := range []string{"kafka", "samsa", "go", "later"} {
		words = append(words, samsatest.KV[string, string]{Key: w, Value: w})
	}
	if err := samsatest.ProduceContext(context.Background(), b.Addr(), processor.NewOutput("words", codec.String(), codec.String()), words...); err != nil {
		fmt.Println(err)
		return
	}

	lengths := processor.NewOutput("lengths", codec.String(), codec.Int64())
	p, err := processor.New(
		processor.Config{Membership: processor.Membership{Brokers: b.Addr()}, Group: "example-replay", BatchWait: 10 * time.Millisecond},
		[]processor.Input[string, string]{{Topic: "words", Key: codec.String(), Value: codec.String()}},
		processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
			for _, r := range b.Records {
				fmt.Printf("%s@%d\n", r.Value, r.Offset)
				if err := lengths.Send(b, r.Value, int64(len(r.Value))); err != nil { // dropped
					return err
				}
			}
			return nil
		}),
		processor.WithReplay(processor.Replay{
			Until:           []processor.PartitionOffset{{Topic: "words", Partition: 0, Offset: 3}},
			SuppressOutputs: true,
		}))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fmt.Println("run:", p.Run(ctx))
	// Output:
	// kafka@0
	// samsa@1
	// go@2
	// run: <nil>
}
