// Package view keeps a read-only, typed replica of a topic on the node that asks for it:
// the last value of every key of a (typically compacted) topic, restored from the topic
// when it starts and followed while it runs, for handlers to look values up by key
// (a table joined to a stream) and for a node to serve lookups over HTTP.
//
//	users, err := view.New(view.Config{Brokers: brokers}, "users", codec.String(), codec.JSON[User]())
//	...
//	go func() { errc <- users.Run(ctx) }()
//	if err := users.WaitReady(ctx); err != nil { ... }
//	u, found, err := users.Get("alice")
//
// Every node that runs a View reads every partition of the topic, without a consumer
// group (nothing is committed; every start reads the topic from the beginning), so each
// holds the whole table. A tombstone (a record with a null value) deletes its key.
//
// # Lifecycle
//
// New validates the configuration and connects nothing. Run looks up the topic's
// partitions and their start and end offsets, reads every partition from its start to
// that end (the restore: Progress reports it, and Run logs it every 5 s), closes Ready,
// and then follows the topic until its context ends, reading records as they are
// written through one consumer and looking the end offsets up every LagInterval for
// Lag. Run returns nil when its context ends, and an error when the View cannot go on
// (see Run). Run is single-use: once it returns, Get fails with ErrClosed and the
// in-memory table is released; to restart, make a new View, which restores again.
//
// # Delivery
//
// A View reads read_committed: records of aborted transactions never show, and the
// restore waits for each partition's last stable offset. A record becomes visible
// through Get once the View has read and stored it: on a quiet topic within a few
// tens of milliseconds of its acknowledgement (the consumer's fetch wait is 10 ms), on
// a busy one as soon as the View catches up; Lag (and the samsa.view.lag metric) says
// how far behind each partition is. Records of one partition are applied in offset
// order, and a key's records are in one partition when producers partition by key,
// so a key's last value wins.
//
// A record whose key or value does not decode, or whose key is null, is skipped: it is
// counted (Progress.Skipped, the samsa.view.records.skipped metric) and logged with its
// partition and offset (without its payload), and the key keeps the value it had. A
// View has no dead-letter topic: it does not own the topic it reads, and every node
// would write the same failure; fix the producer, or the codec, and restart the View.
//
// # Memory
//
// The in-memory store holds each key and value as the encoded bytes the topic has, and
// counts them plus EntryOverhead (96 bytes) per entry against Config.MaxBytes; Get
// decodes a value on every call. Reaching the bound makes Run fail with an error wrapping
// ErrMemoryBound that names the bound and the bytes held; nothing is ever evicted.
// The Go heap holds the table and garbage up to GOGC's headroom on top, so a process
// with a View of MaxBytes needs about MaxBytes to 2 × MaxBytes more memory (GOMEMLIMIT
// holds the headroom down). Besides, while the View is behind (restoring), the
// consumer's prefetch holds up to librdkafka's queued.max.messages.kbytes (64 MiB by
// default, outside the Go heap) and the writer's queue 4 × WriteBatch records.
//
// With Config.Redis the table is kept in Redis instead, for tables larger than a node
// should hold: Run clears the View's hashes, restores into them and follows, writing in
// pipelines of WriteBatch updates; Get reads Redis. That costs a Redis round trip per
// Get (tens of microseconds with Redis on the same machine, against under a
// microsecond in memory: BenchmarkLookup measures both), Redis memory for the table
// per View (each View has its own copy, under its own RedisPrefix), and a restore
// bounded by Redis's write rate rather than the consumer's.
// A View does not bound Redis's memory: Redis's maxmemory does (with the noeviction
// policy, so that Redis fails the writes rather than drop keys).
//
// # Concurrency
//
// Get, GetContext, Len, Lag, Progress, Ready, WaitReady and ServeHTTP are safe for
// concurrent use by any number of goroutines (the handlers of every partition of a
// processor, HTTP requests) while Run updates the table. The in-memory table is split
// into 64 shards with their own read-write locks: an update holds one shard for a map
// write. Run's goroutine polls the consumer and decodes the records; a writer
// goroutine applies them to the store in batches of what is queued; during the restore
// another logs the progress, and while following another looks up the end offsets.
// All of them end before Run returns.
package view
