package integration

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/state"
)

func TestMain(m *testing.M) { os.Exit(stack.RunTests(m)) }

func key(i int) string { return fmt.Sprintf("k%06d", i) }

// foldKeys is a checkpointed handler's read-modify-write: it reads the values of the
// batch's keys from tbl, folds each record in order into its key's value with f, and
// applies the new values with the batch's next offsets.
func foldKeys(ctx context.Context, tbl *state.Table[string, int64], b *processor.Batch[string, string], f func(r processor.Record[string, string], v *int64) error) error {
	var keys []string
	index := map[string]int{}
	for _, r := range b.Records {
		if _, ok := index[r.Key]; !ok {
			index[r.Key] = len(keys)
			keys = append(keys, r.Key)
		}
	}
	vals, _, err := tbl.Partition(b.Partition).GetMany(ctx, keys)
	if err != nil {
		return err
	}
	for _, r := range b.Records {
		if err := f(r, &vals[index[r.Key]]); err != nil {
			return err
		}
	}
	puts := make([]state.Entry[string, int64], len(keys))
	for i, k := range keys {
		puts[i] = state.Entry[string, int64]{Key: k, Value: vals[i]}
	}
	return tbl.Apply(ctx, b.Partition, puts, nil, b.NextOffsets())
}

// copyHandler writes every record to out as it is.
func copyHandler[K, V any](out processor.Output[K, V]) processor.HandlerFunc[K, V] {
	return func(_ context.Context, b *processor.Batch[K, V]) error { return sendAll(b, out) }
}

// sendAll sends every record of b to out, key and value as they are.
func sendAll[K, V any](b *processor.Batch[K, V], out processor.Output[K, V]) error {
	for _, r := range b.Records {
		if err := out.Send(b, r.Key, r.Value); err != nil {
			return err
		}
	}
	return nil
}
