package distributed_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/samsa-go/samsa/distributed"
	"github.com/samsa-go/samsa/samsatest"
)

func ExampleNode_Run() {
	// An in-process broker from the test kit; a real cluster's address works the same.
	b, err := samsatest.StartBroker()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	node, err := distributed.New(distributed.Config{Membership: distributed.Membership{Brokers: b.Addr()}, Partitions: 2, NodeID: "node-1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	started := map[int]int32{}
	procs := make([]distributed.Process, 3)
	for i := range procs {
		procs[i] = func(ctx context.Context) error {
			info, _ := distributed.InfoFrom(ctx)
			mu.Lock()
			started[info.Index] = info.Slice
			if len(started) == len(procs) {
				cancel() // every process runs: stop the example
			}
			mu.Unlock()
			<-ctx.Done()
			return nil
		}
	}
	err = node.Run(ctx, "example", procs) // blocks until cancel
	fmt.Println("run:", err)
	for i := range procs {
		fmt.Printf("process %d ran in slice %d\n", i, started[i])
	}
	// Output:
	// run: <nil>
	// process 0 ran in slice 0
	// process 1 ran in slice 1
	// process 2 ran in slice 0
}
