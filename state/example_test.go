package state_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/state"
)

func ExampleNewMemory() {
	ctx := context.Background()
	s := state.NewMemory[string, int]()
	_ = s.PutMany(ctx, []state.Entry[string, int]{{Key: "apples", Value: 3}, {Key: "pears", Value: 5}})
	values, found, _ := s.GetMany(ctx, []string{"apples", "plums", "pears"})
	fmt.Println(values, found)
	// Output: [3 0 5] [true false true]
}

// A handler's part of exactly-once effects: read what the batch builds on, compute, and
// write the results together with the batch's offsets. Applying the same batch again (a
// replay after a crash) changes nothing.
func ExampleNewMemoryTable() {
	ctx := context.Background()
	totals := state.NewMemoryTable[string, int64]()

	type purchase struct {
		user   string
		amount int64
	}
	// A batch of partition 0 of "purchases": offsets 40 to 42.
	batch := []purchase{{"ada", 250}, {"bob", 100}, {"ada", 50}}
	next := map[string]int64{"purchases": 43} // Batch.NextOffsets()

	apply := func() error {
		current, _, err := totals.Partition(0).GetMany(ctx, []string{"ada", "bob"})
		if err != nil {
			return err
		}
		sum := map[string]int64{"ada": current[0], "bob": current[1]}
		for _, p := range batch {
			sum[p.user] += p.amount
		}
		puts := []state.Entry[string, int64]{{Key: "ada", Value: sum["ada"]}, {Key: "bob", Value: sum["bob"]}}
		return totals.Apply(ctx, 0, puts, nil, next)
	}

	fmt.Println(apply())
	fmt.Println(apply()) // the same batch again
	ada, _, _ := totals.Partition(0).Get(ctx, "ada")
	applied, _ := totals.Applied(ctx, "purchases", 0)
	fmt.Println(ada, applied)
	// Output:
	// <nil>
	// state: batch already applied
	// 300 43
}

// A distributed process writes with its slice's fencing token; after the slice moved, the
// former owner's writes are rejected.
func ExampleTable_PutFenced() {
	ctx := context.Background()
	t := state.NewMemoryTable[string, string]()
	const slice = 3
	fmt.Println(t.PutFenced(ctx, slice, "printer-3", 17, state.Entry[string, string]{Key: "status", Value: "printing"}))
	// The slice moved to another node, which got token 21.
	fmt.Println(t.PutFenced(ctx, slice, "printer-3", 21, state.Entry[string, string]{Key: "status", Value: "idle"}))
	// The old node wakes up from a pause.
	err := t.PutFenced(ctx, slice, "printer-3", 17, state.Entry[string, string]{Key: "status", Value: "done"})
	var fe *state.FencedError
	fmt.Println(errors.Is(err, state.ErrFenced), errors.As(err, &fe) && fe.Highest == 21)
	status, _, _ := t.Partition(slice).Get(ctx, "status")
	fmt.Println(status)
	// Output:
	// <nil>
	// <nil>
	// true true
	// idle
}

func ExampleNewRedis() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close() // the store never closes it

	profiles, err := state.NewRedis(client, "profiles", codec.String(), codec.JSON[map[string]string]())
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := profiles.Put(ctx, "ada", map[string]string{"lang": "en"}); err != nil {
		fmt.Println(err) // state: redis Put "profiles" (1 key): dial tcp ...
	}
}

func ExampleNewTable() {
	// A Cluster client works the same way: each partition's keys share one hash slot.
	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}})
	defer client.Close()

	totals, err := state.NewTable(client, "purchases", codec.String(), codec.Int64())
	if err != nil {
		panic(err)
	}
	// processor.New(cfg, inputs, handler, processor.WithCheckpoint(totals)), and in the
	// handler: totals.Apply(ctx, b.Partition, puts, nil, b.NextOffsets()).
	_ = totals
}
