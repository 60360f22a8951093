// Package samsatest is samsa's test kit: everything a processor's or a distributed
// process's tests need, from a unit test of a handler to instances rebalancing under
// injected faults, with nothing installed.
//
// # A handler, no broker
//
// HandlerDriver runs a handler with the processor's real decoding and error policy on
// records written in the test, and returns what it sent (typed, per output, with
// Outputs), what it dead-lettered and the error that would stop the processor — a
// handler panic included, with its stack:
//
//	d, _ := samsatest.NewHandlerDriver(inputs, handler, processor.DeadLetter("dlq"))
//	res, _ := d.Handle(ctx, processor.Record[string, int64]{Key: "a", Value: 2})
//	sent, _ := samsatest.Outputs(res, doubled) // []Sent[string, int64]{{Key: "a", Value: 4}}
//
// DriveProcessor does the same with the *processor.Processor your program builds.
//
// # Processors on a broker
//
// Broker is an in-process Kafka-protocol broker (franz-go's kfake) that starts in
// milliseconds: the quickstart's broker, and the tests'. Produce and ReadAll move typed
// records in and out; processor.Producer and topics.Create do the same against
// a real cluster. Driver runs several instances of a processor and scripts their life
// (Add, Remove: each moves partitions), while the broker injects what peers' test
// drivers cannot: a produce request refused (FailProduce), an assignment lost without
// a revoke (LoseAssignment), the broker gone for a while (Outage). CheckDelivery and
// RequireDelivered then check the promises: nothing lost, order per key kept, the
// group's commits at the input's end, and, for exactly-once, nothing duplicated.
//
// # Distributed processes
//
// Track wraps a distributed process list so that a test sees every run of every process
// (node, fencing token, start and stop); Tracker.Overlaps lists any process that ran
// on two nodes at once, Tracker.Gaps the margin of each hand-off.
//
// The in-process broker is a fake: it keeps everything in memory and answers some
// requests unlike Apache Kafka. samsa itself tests every feature on a real cluster too;
// so should a program whose correctness depends on broker behaviour.
package samsatest
