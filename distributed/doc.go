// Package distributed runs long-lived background processes spread over a cluster of
// nodes: a list of processes is sliced over the partitions of a technical topic, a Kafka
// consumer group assigns the slices to nodes, and each node runs the processes of the
// slices it owns, stopping them on the old owner before they start on the new one.
//
//	node, err := distributed.New(distributed.Config{Membership: distributed.Membership{Brokers: brokers}})
//	...
//	err = node.Run(ctx, "printers", processes) // []distributed.Process; blocks until ctx ends
//
// # Slicing
//
// Run(ctx, name, processes) joins consumer group name on the technical topic
// TopicPrefix+name, created with Config.Partitions partitions when missing (an existing
// topic keeps its count, N). Process i belongs to slice i mod N (SliceOf): with more
// processes than partitions a slice runs several; with fewer, some slices are empty. The
// node runs the processes of the slices whose partitions it is assigned. A node may Run
// several lists under different names (one Run call each, concurrently).
//
// # Hand-offs: stop before start
//
// When a slice is revoked, its processes' contexts are cancelled and the revoke waits
// until every one has returned before the rebalance completes, so the next owner starts
// them only after they stopped here. With the Cooperative protocol (the default) only the
// slices that move are stopped. A lost assignment (the node was timed out of the group)
// cancels at once.
//
// A node cut off from the group coordinator stops its processes before the broker's
// session timeout gives their slices to another node: once the coordinator has not
// answered for SessionTimeout minus LivenessMargin (3 s by default; heartbeats are
// answered every HeartbeatInterval), the slices' processes are cancelled and the slices
// paused. The margin is what a GC pause, a starved CPU or a slow-stopping process can
// eat before two instances overlap. If the coordinator answers again and the membership
// is steady before the slices move, their processes restart with the same fencing token;
// otherwise the slices are revoked as lost and move.
//
// A process still running StopTimeout after its cancellation makes Run return an error
// wrapping ErrStuck that names it. The node then keeps holding the slice so that no other
// node starts a second instance; the program should exit, which ends the stuck process
// and releases the slice (after the session timeout). When Run's context was cancelled
// the node holds for as long as the process runs (it keeps polling, so it stays in the
// group); when a rebalance revoked the slice, the rebalance waits inside the revoke, and
// librdkafka gives the slice up after MaxPollInterval if the program does not exit.
//
// # Termination and supervision
//
// A process that returns nil is done and is not restarted (a later owner of its slice
// runs it again). One that returns an error (or panics: the error then wraps ErrPanic and
// carries the stack) fails Run with a *ProcessError, after the other processes were
// stopped. Supervise wraps a process to
// restart it instead, with exponential backoff and full jitter, optionally a bounded
// number of times.
//
// # Fencing
//
// Consumer-group membership alone cannot promise that two instances never run at once: a
// node paused (SIGSTOP, a long GC, a network partition) past the session timeout loses
// its slices to another node, and when it resumes its processes run on until it notices.
// So every ownership gets a fencing token: on assign, the node writes a claim record to
// the slice's partition and uses the record's offset as the token (Kafka mints it; every
// change of owner writes a new, higher one). Processes read it with TokenFrom or InfoFrom
// and pass it with their side effects; a store that rejects a token lower than the highest
// it has seen (state's fenced writes) makes a former owner's late writes harmless. The
// promise is: at most one instance of a process runs at a time under clean hand-offs and
// crashes, and a paused former owner's fenced side effects are rejected. The overlap
// window in the pause case is measured by the integration tests, not assumed away.
//
// # Lifecycle and concurrency
//
// New validates the config and connects nothing. Run blocks until ctx is cancelled (it
// then stops every process, waits for them, and leaves the group, returning nil), a
// process fails, a process is stuck, or the group fails. Every process runs on its own
// goroutine; one goroutine per owned slice supervises them; one polls the group.
package distributed
