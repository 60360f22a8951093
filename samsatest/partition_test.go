package samsatest_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/samsatest"
	"github.com/samsa-go/samsa/state"
)

// processor.Producer puts every key where state.PartitionOf says, so a Table lookup by
// key finds what a processor stored for it.
func TestProducerPartitionsLikePartitionOf(t *testing.T) {
	b := samsatest.NewBroker(t, samsatest.Topic{Name: "users", Partitions: 7})
	out := processor.NewOutput("users", codec.String(), codec.String())
	var recs []samsatest.KV[string, string]
	for i := range 300 {
		recs = append(recs, samsatest.KV[string, string]{Key: fmt.Sprintf("user-%d", i), Value: "v"})
	}
	samsatest.Produce(t, b.Addr(), out, recs...)
	got, err := samsatest.ReadAll(t.Context(), b.Addr(), "users", codec.String(), codec.String())
	require.NoError(t, err)
	require.Len(t, got, len(recs))
	for _, r := range got {
		require.Equal(t, state.PartitionOf([]byte(r.Key), 7), r.Partition, "key %q", r.Key)
	}
}
