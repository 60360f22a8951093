// Package state keeps handlers' state in typed key-value stores: [Redis] (a go-redis
// UniversalClient: single node, Sentinel or Cluster), [Memory] for tests and examples,
// and [Table], a store split by input partition whose batches are applied exactly once.
//
// Stores are context-first and batch-first, because handlers work on batches: GetMany,
// PutMany and Delete cost one round trip whatever their size. Keys and values go through
// codecs ([codec.Codec]); an absent key is found == false, not an error.
//
// # Tables and exactly-once effects
//
// A processor delivers at least once: a batch is handled again after a crash, a
// rebalance, or a retry. For its effects on a Table to count once, the handler writes
// them with the batch's offsets in one call:
//
//	values, found, err := table.Partition(b.Partition).GetMany(ctx, keys)
//	// ... compute the new values from the batch ...
//	err = table.Apply(ctx, b.Partition, puts, deletes, b.NextOffsets())
//	if errors.Is(err, state.ErrAlreadyApplied) { err = nil }
//
// and the processor is given the table as its checkpoint (processor.WithCheckpoint), so
// that on every assignment it asks Applied where each partition stands and skips the
// records below. In Redis the writes and the offsets commit in one Lua script, all keys of
// a partition sharing the Cluster hash slot of the tag {namespace:partition}.
//
// [TableAdmin] works on a Redis table's namespace as bytes, for tools (the samsa
// command): a partition's applied offsets, clearing a partition, and [Compare] of two
// namespaces, such as a table rebuilt by a replay and the live one.
//
// # Lifecycle
//
// Stores and tables hold no goroutines and no resources of their own: there is nothing to
// close. They use the go-redis client they are given and never close it; close it
// yourself after the last call. Calls made while Redis is down fail with an [*Error]
// naming the operation and namespace; after Redis comes back the same store works again
// once the client has redialled (go-redis's pool retries a failed dial in the background,
// about once a second, and returns its last dial error until then). The client's retry
// settings (MaxRetries, default 3) apply to every call.
//
// # Concurrency
//
// Every store and table is safe for concurrent use. A Table expects one writer per
// partition at a time, which is what a processor gives it (one handler call at a time per
// partition): concurrent Applies of one partition through a Table that has seen its
// offsets reject each other with ConflictError.
// Batch calls of a plain store are not atomic (a pipeline), except Table.Apply and
// Table.PutFenced (one script each) and a table partition's GetMany and PutMany without
// TTL (one MGET or MSET).
//
// # Delivery
//
// Exactly-once here means: the effects of a batch on a Table are applied once, even when
// the batch is processed twice. It does not mean the handler runs once (it may run again
// and find ErrAlreadyApplied), nor that the batch's Kafka outputs are produced once: the
// store is outside the Kafka transaction, and outputs follow the processor's own mode.
//
// Two mechanisms give it. Offsets: Apply writes nothing when every offset it is given is
// already recorded, which also makes go-redis's own retries harmless (go-redis resends a
// command whose connection broke with EOF, even though Redis may have run it; a plain
// INCRBY sent that way can count twice, an Apply cannot). Ownership: a Table remembers the
// offsets it last saw for a partition and Apply fails with [ConflictError] if they
// changed under it: moved on by another writer ([ErrFenced]), so a former owner that
// resumes after a pause cannot overwrite its successor; or gone back ([ErrStateLost]),
// so a writer does not build on state Redis has lost. For writers that are not processors ([distributed] processes), PutFenced
// checks a fencing token instead, rejecting any token below the highest seen.
//
// Durability is Redis's: an acknowledged Apply is as durable as Redis's persistence
// makes it. With AOF and appendfsync everysec a crash of Redis can lose about the last
// second of writes; with appendfsync always nothing acknowledged is lost; without
// persistence a restart empties the table. Replication is asynchronous, so a failover can
// lose acknowledged writes too (WAIT does not make Redis strongly consistent). A loss
// takes state and offsets back together, never one without the other, so the table stays
// consistent with itself; but it is then behind the consumer group's committed offsets,
// and the lost batches' effects come back only if the records from Applied on are read
// again. A Table that saw the lost offsets reports it ([ErrStateLost]); after a restart of
// the processor too, compare Applied with the committed offset on assignment to detect it.
//
// # Redis ACL and TLS
//
// A Redis ACL user needs, for the stores and tables of namespace ns, these keys and
// commands and nothing more:
//
//	ACL SETUSER app on >password resetkeys ~ns:* ~{ns:* resetchannels -@all +get +mget +set +mset +del +hget +hset +evalsha +eval
//
// ~ns:* holds a store's keys (NewRedis), ~{ns:* a table's (NewTable: each key starts
// with the hash tag {ns:partition}). GET, MGET, SET, MSET and DEL are the batch calls;
// HGET reads a table's applied offsets; EVALSHA runs the Lua scripts of Apply and
// PutFenced, and EVAL sends a script Redis has not cached (after a restart). Redis checks
// the commands a script runs against the same ACL: HGET, HSET, SET, MSET and DEL. SCRIPT
// is not needed. [TableAdmin] (the samsa command's table operations) also needs
// +hgetall and +scan: without +scan it cannot list partitions, without +hgetall it cannot
// read applied offsets (NOPERM). On Redis Cluster, ACLs are per node (set the user on
// every node), and go-redis's Cluster client also needs +cluster|slots (the slot map;
// without it every call fails with NOPERM) and +command (the commands' key positions:
// without it the calls still work, but the client asks again on each one, a refused
// round trip that Redis records in ACL LOG and go-redis logs). go-redis v9 sends CLIENT
// SETINFO on every new connection and ignores a refusal; Redis 7.2 and later know that
// command, so there the rules above make each connection leave an ACL LOG entry: add
// +client|setinfo, or set Options.DisableIdentity (tested on Redis 7.0, which has no
// SETINFO).
//
// Redis refusing the credentials or a permission (WRONGPASS, NOAUTH, NOPERM) gives an
// [*Error] whose Permanent method reports true, and the error never contains the
// password: a processor given a table as its checkpoint then fails Run at assignment
// instead of waiting for Redis. TLS is the client's: set go-redis's Options.TLSConfig
// (a *tls.Config trusting the server's CA).
//
// [distributed]: https://pkg.go.dev/github.com/samsa-go/samsa/distributed
package state
