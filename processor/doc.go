// Package processor runs typed, batched, per-partition processors over Kafka topics: a
// handler gets one partition's records a batch at a time and sends typed outputs, and an
// input offset is committed only after the outputs made from it are acknowledged.
//
// A processor consumes one or more input topics in a consumer group. Every partition
// assigned to the instance gets a handler (shared, or one per partition from a Factory)
// that receives batches of that partition's records, decoded with the input's codecs. The
// handler sends typed outputs through the batch:
//
//	var doubled = processor.NewOutput("doubled", codec.Int64(), codec.Int64())
//
//	p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: "doubler"},
//		[]processor.Input[int64, int64]{{Topic: "numbers", Key: codec.Int64(), Value: codec.Int64()}},
//		processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
//			for _, r := range b.Records {
//				if err := doubled.Send(b, r.Key, 2*r.Value); err != nil {
//					return err
//				}
//			}
//			return nil
//		}))
//	...
//	err = p.Run(ctx)
//
// # Delivery
//
// At-least-once. For each partition, in order: collect up to BatchSize records (or what
// arrived within BatchWait of the first), decode, call the handler, produce everything it
// sent with an idempotent producer (acks=all), wait for every delivery report, and only
// then store the offset after the batch's last record. Offsets are stored in batch order:
// never past a batch whose outputs are not all acknowledged, even when later batches of
// the partition finished first (up to MaxInFlightBatches are in flight). Stored offsets
// are committed every CommitInterval, and synchronously when a partition is revoked and
// on shutdown. A crash anywhere before the store replays the batch: outputs may repeat,
// inputs are never lost. An output that is not acknowledged never leads to a commit.
//
// A partition whose assignment was lost (the member was timed out of the group) commits
// nothing more: another member may own it already.
//
// Failures go through Config.ErrorPolicy (see Policy): decode failures per record;
// handler errors and panics per batch, retried under Retry, then narrowed to the failing
// records; unacknowledged outputs per batch. Stop (the default) makes Run return an
// *Error naming topic, partition, offset and stage, with nothing of the failed batch
// committed. DeadLetter writes the original record with headers describing the failure
// (HeaderError and friends) and commits the input only once that write is acknowledged.
//
// # Exactly-once mode
//
// With Config.ExactlyOnce, each instance has one transactional producer (KIP-447: zombie
// instances are fenced through the consumer group generation sent with the offsets).
// Batches are handled as usual; their outputs, dead letters included, are produced into
// the open transaction, and every CommitInterval (and when partitions are revoked, and
// on shutdown) the input offsets of the batches produced so far are sent to the
// transaction and it commits: outputs and offsets become visible together, or not at
// all. Inputs are read read_committed, and so must the outputs' readers be. A
// retriable error is retried; an abortable one aborts the transaction and rewinds every
// partition that had work in it to its committed offset (its later batches are handled
// again, which read_committed readers never see twice). A fatal error of the fencing
// kind (the producer's epoch is gone: the coordinator aborted a transaction that
// outlived TransactionTimeout, for example while a broker was down, or another producer
// registered the same transactional id) replaces the producer with a new one of the same
// id and rewinds the open transaction's partitions, logged as "producer fenced;
// replacing it"; three in a row without a commit in between, or any other fatal error,
// make Run return it. Zombies stay fenced regardless: the group generation sent with the
// offsets decides whether a transaction can commit. Every transactional call is bounded
// by TransactionTimeout; one that overruns it by 5 s (librdkafka #5456 and #5511:
// SendOffsetsToTransaction can block for good once the group coordinator went away) is
// handled like a fence, and the stuck producer is closed when its call returns. Five
// aborts in a row stop the processor: an output the broker refuses for good would
// otherwise loop.
//
// An instance cut off from the brokers keeps running: once its partitions are lost
// (past SessionTimeout) it aborts the open transaction, retrying that abort while the
// coordinator is out of reach ("Timed out waiting for operation to finish" is
// retriable), and rejoins the group when the network heals; if the coordinator aborted
// the transaction in the meantime, the producer comes back fenced and is replaced as
// above. Only Run's context ends that wait.
//
// One instance's open transaction holds back every instance's output from
// read_committed readers until it ends: such a reader stops at a partition's last
// stable offset, the first offset of the oldest transaction still open on it, and the
// outputs of all instances share the output partitions. A transaction normally ends
// within CommitInterval; one whose instance is cut off, hung or killed stays open until
// the coordinator aborts it, TransactionTimeout after it began plus up to the broker's
// transaction.abort.timed.out.transaction.cleanup.interval.ms (10 s by default); about
// 11 to 14 s with the defaults, during which no reader of the outputs sees anything new.
// That is why TransactionTimeout defaults to 10 s, well under Kafka's 60 s: raise it
// only as far as a stalled output is acceptable, and keep it above CommitInterval plus
// the longest batch.
//
// Choose it when a downstream reader must not see duplicates and reads with
// read_committed. It costs a transaction per CommitInterval per instance (commit
// latency, and end-to-end latency of up to CommitInterval for read_committed readers),
// and handler side effects outside Kafka (a database) are still at-least-once: use a
// checkpointed store (WithCheckpoint) for those, whose effects are then made once each
// transaction commits.
//
// Several inputs must be co-partitioned (same partition count, checked when Run starts):
// partition p of every input goes to the same handler, which makes partition-wise joins
// possible. Keeping them together needs the range assignor, so several inputs default
// to the Eager protocol (or use Consumer, KIP-848, where the broker's range assignor is
// requested); Cooperative is refused. Within a batch, records of the different inputs are
// merged by timestamp, each topic keeping its own offset order, so a join sees a table
// update before a later event of the other topic that arrived in the same batch; across
// batches, arrival order holds.
//
// Outputs are partitioned by the murmur2 hash of their key, as Kafka's Java clients do.
//
// # Replay
//
// WithReplay runs a processor as a bounded re-run of its inputs (to rebuild its state
// or its outputs from the log): records below each partition's end offset in Replay.Until are
// handled as usual, none at or past it, and Run returns nil once every partition the
// instance owns has reached its end (a position past a transaction marker or a
// compacted-away offset counts) and its offsets are committed. With
// Replay.SuppressOutputs nothing is published: handlers and their state effects run,
// and what they send (dead letters included) counts as acknowledged without being
// produced. Run a replay in its own consumer group: the live processor keeps running
// on its own. Stopped early, a replay commits what it finished and Run returns an error
// wrapping ErrReplayUnfinished; run again, it resumes. `samsa replay plan` writes the
// end offsets (a Replay as JSON) and `samsa table compare` compares a table
// rebuilt into a new namespace with the live one.
//
// # Lifecycle
//
// New validates the configuration (every problem at once, as a *ConfigError) and
// connects nothing. Run checks the topics, joins the group and processes until its
// context is cancelled, Close is called, or a failure stops it. On the way out each
// partition finishes the batches it has in flight (bounded by StopTimeout), commits,
// and the member leaves the group; Run then returns nil (or the failure). Run is
// single-use; Close is idempotent and waits for Run to return.
//
// # Concurrency
//
// One goroutine polls the consumer and never runs user code; each assigned partition has
// its own worker goroutine, so handlers of different partitions run in parallel while
// one partition's batches are handled one at a time, in order. A shared Handler must be
// safe for concurrent use; a Factory's handlers need not be.
//
// A handler that waits (on a service, say, 10 ms a record) runs a partition at its
// speed: 100 records a second. Config.Concurrency lifts that within a partition: each
// batch is split into units, the records of one key (Ordering ByKey, the default) or
// single records (Unordered), and up to Concurrency units of a partition are handled at
// once. A key's units run one after the other, in offset order, also across batches;
// each unit's outputs are produced when it finishes, so a key whose handler is slow or
// retrying holds back its own records, while the partition's other keys go on. What is
// committed does not change: a partition's batches settle in order, the committed offset
// never passes a record whose outputs are not acknowledged, and a revoked partition
// drains its units with its batches, so a clean hand-over handles nothing twice. A held
// key holds its partition's commit, and once MaxInFlightBatches batches wait behind it,
// the partition's intake; the records done behind it are recorded in the commit's
// metadata, and the partition's next owner skips them. With Concurrency above 1 a Factory's handler is called from
// several goroutines at once and must be safe for that. New refuses Concurrency
// above 1 with exactly-once mode or WithCheckpoint (see Config.Concurrency). Outputs
// the broker did not acknowledge are produced again (Retry) or dead-lettered after the
// key's later outputs, as for any batch whose outputs failed.
//
// A handler's context is
// cancelled StopTimeout after its partition is revoked or Run's context ends (at once
// when the assignment is lost). A handler that returns then leaves its batch uncommitted
// for the next owner, and a shutdown still returns nil; one that has not returned 5 s
// later makes Run fail with an error wrapping the group's revoke timeout, rather than let
// the partition run twice. So Run returns within StopTimeout + 5 s of its context
// ending (25 s by default, under an orchestrator's usual 30 s grace period), and Close
// returns after Run. No goroutine started by Run outlives it, except one waiting (to close it) on a
// replaced exactly-once producer whose librdkafka call never returned.
//
// # Telemetry cost
//
// Spans (one per batch for process, send and commit) and metrics cost little; what
// tracing costs is the W3C traceparent header (55 bytes) written on every output, which
// librdkafka copies per record and the broker stores: with 100-byte records it adds about
// 60% to the bytes produced. Only a sampled batch's outputs carry it: with a ratio
// sampler, unsampled batches cost no header work, and a consumer downstream makes its
// own sampling decision for their outputs, as for records produced without tracing.
// With every span sampled, throughput falls by about what a header of that size on
// every record costs any program producing through librdkafka (make bench prints both:
// samsa-trace and loop-hdr). To keep spans but not the headers (downstream spans then
// do not join the trace), pass WithPropagator(propagation.NewCompositeTextMapPropagator()).
//
// # Memory
//
// MaxBufferedBytes (4 MiB) is one byte budget for the records an instance holds:
// fetched and waiting, being handled, and in flight with their outputs until those are
// acknowledged (keys, values and headers, plus about 128 bytes a record). Left at its
// default it is at least 128 KiB per owned partition: H = max(4 MiB, partitions × 128
// KiB); set, H is MaxBufferedBytes. Each partition's share is S = max(H / partitions, 256 KiB).
// When the partitions hold H together, the consumer stops polling whenever a record
// lands in a partition that holds its share, until acknowledgements free some bytes;
// meanwhile librdkafka keeps what it prefetched and stops fetching once its own queue is
// full, so nothing fetched is dropped or fetched twice. A partition below its share
// never stops the others. A partition that stays at its share for 100 ms (a handler
// slower than the fetch, not one waiting for acknowledgements) is paused, which makes
// librdkafka drop what it had prefetched for it, and resumed below half of its share. A
// batch is cut at BatchSize records or a quarter of the share. So the records held stay
// below H plus what the partitions below their share may add, at most 2 × max(H,
// partitions × 256 KiB) =: 2 H', and besides them the outputs of batches handled from
// them (O; as many bytes as the records for a handler that sends one output of the same
// size per input).
//
// librdkafka's prefetch queue, queued.max.messages.kbytes, is half of MaxBufferedBytes
// (at least 1 MiB; ConsumerOverrides may set it), overshot by at most one fetch response
// (fetch.max.bytes, 50 MiB): P. Go's collector, at the default GOGC, lets the heap grow
// to about twice what is live before it collects (GOMEMLIMIT holds it); librdkafka
// holds a copy of each output in flight; the C allocator may keep up to about twice what
// librdkafka uses resident. So a process's resident memory above its idle size is at
// most about 2 × (2 H' + O + idle Go heap) + 2 × (P + O). make bench-mem checks that
// bound with a slow handler over many partitions; make bench prints throughput and peak
// memory against MaxBufferedBytes: past the default, a larger budget mostly buys memory.
//
// # Tuning
//
// The consumer's defaults (fetch.wait.max.ms=10, fetch.min.bytes=1,
// queued.min.messages=100000, queued.max.messages.kbytes from MaxBufferedBytes,
// fetch.queue.backoff.ms=10) were chosen by absolute throughput and latency on a real
// broker (make bench compares them with librdkafka's). librdkafka's own
// fetch.queue.backoff.ms (1 s) postpones every partition's next fetch once its local
// queue is over queued.min.messages or queued.max.messages.kbytes, so a consumer that
// keeps its queue near that mark fetches in bursts and idles in between. Any librdkafka
// property the framework does not own can be set through Overrides, ConsumerOverrides and
// ProducerOverrides (TLS, SASL, compression, linger); owned ones are rejected with the
// reason.
package processor
