package processor_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
)

func ExampleNew() {
	// An in-process broker from the test kit; a real cluster's address works the same.
	b, err := samsatest.StartBroker(samsatest.Topic{Name: "words", Partitions: 1}, samsatest.Topic{Name: "lengths", Partitions: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	words := processor.NewOutput("words", codec.String(), codec.String())
	if err := samsatest.ProduceContext(context.Background(), b.Addr(), words,
		samsatest.KV[string, string]{Key: "w1", Value: "kafka"},
		samsatest.KV[string, string]{Key: "w2", Value: "samsa"},
		samsatest.KV[string, string]{Key: "w3", Value: "go"}); err != nil {
		fmt.Println(err)
		return
	}

	lengths := processor.NewOutput("lengths", codec.String(), codec.Int64())
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	p, err := processor.New(
		processor.Config{Membership: processor.Membership{Brokers: b.Addr()}, Group: "example", BatchWait: 10 * time.Millisecond},
		[]processor.Input[string, string]{{Topic: "words", Key: codec.String(), Value: codec.String()}},
		processor.HandlerFunc[string, string](func(ctx context.Context, b *processor.Batch[string, string]) error {
			for _, r := range b.Records {
				fmt.Printf("%s@%d -> %d\n", r.Value, r.Offset, len(r.Value))
				if err := lengths.Send(b, r.Value, int64(len(r.Value))); err != nil {
					return err
				}
			}
			once.Do(cancel) // stop after the first batch; it is still produced and committed
			return nil
		}))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("run:", p.Run(ctx))
	// Output:
	// kafka@0 -> 5
	// samsa@1 -> 5
	// go@2 -> 2
	// run: <nil>
}
