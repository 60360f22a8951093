// Package integration holds samsa's tests against real components (Apache Kafka in
// KRaft mode, redis-server, Jaeger) and the binaries and harnesses they stand on. It is a
// map for a newcomer; nothing outside integration/ imports it (TestLayout checks).
//
// # The environment
//
// integration/stack starts the components on 127.0.0.1 as child processes stopped by
// PID: StartKafka (1 or 3 nodes; KafkaOptions.Proxied puts a fault proxy in front of
// each node's client listener, see below; KafkaOptions.SASL adds a SASL/SCRAM listener
// with ACLs enforced; KafkaOptions.TLS a TLS listener, mutual with MutualTLS, and makes
// the SASL listener SASL_SSL; the certificates are generated at start, GenerateTLS),
// StartRedis (RedisOptions.TLS: TLS only; RedisOptions.User: an ACL user),
// StartRedisCluster, StartJaeger.
// The tests read KAFKA_BROKERS, REDIS_ADDR, OTEL_EXPORTER_OTLP_ENDPOINT and
// JAEGER_QUERY_URL; when one is unset, stack.KafkaBrokers (and friends) start the
// component once per test binary. `go run ./integration/cmd/stack run -- CMD` starts all
// of them and runs CMD with the variables exported: that is how `make test` and `make
// test-fault` share one stack. Tests that kill, pause or cut off brokers start their own
// cluster instead.
//
// integration/faultproxy is a TCP proxy that delays, black-holes (accepting and holding
// bytes, per direction) and resets connections. A Kafka client follows the brokers'
// advertised listeners, so the proxy sits between a client and a broker only when the
// broker advertises the proxy: stack.KafkaOptions{Proxied: true}, then
// Kafka.ProxiedBootstrap for the client to cut off and Kafka.Proxy(id) to command.
//
// # Worker binaries
//
// The fault suites run the code under test in its own OS process, so it can be
// SIGKILLed, SIGSTOPped, restarted and cut off, while the test process checks:
//
//	worker       -mode copy: identity processor, output value "<in value>|<partition>|<offset>|<pid>"
//	             (-eos: exactly-once); -mode sum: checkpointed running sums per key in a Redis
//	             state.Table (-out: a count per record to an output topic; -eos: exactly-once);
//	             build with -tags chaos for fail-points ($SAMSA_FAILPOINT)
//	distnode     one node of a distributed cluster; its processes report to a checker over a Unix socket
//
// The tests build them with the go tool into a temp dir (harness.Build, harness.GoBuild;
// buildEOSWorker adds the chaos tag).
//
// # The harness (integration/harness)
//
// A non-test package holds what the suites share, so that a suite file holds only its
// scenarios (go doc ./integration/harness): suite gates (harness.RequireReal,
// harness.RequireFaultSuite); topic creation with a wait for every partition's leader;
// end and committed offsets (harness.Probe); the idempotent test producer and
// harness.SeqProducer (keyed, sequenced input); harness.ReadTopic and
// harness.TopicReader (a live reader at one isolation level); the verdicts
// harness.TallySeq (lost, duplicates, per-key order), harness.CheckEOS (output == input
// exactly, order, running sums, aborted_visible) and harness.SumTable (a sum worker's
// Redis table against its input); worker processes (harness.StartWorker,
// harness.ExitDesc) and their logs. integration/bench creates its topics with it too.
//
// # Test-only helpers
//
//	helpers_test.go     TestMain (one stack per test binary), foldKeys, a processor's Run in
//	                    the background (goRun) or until a condition (runUntil)
//	eos_fault_test.go   eosEnv: a three-node cluster, the chaos worker, finishRun and verify
//	state_fault_test.go sfEnv: a sum worker, its own redis-server, the input's producer
//	distributed_test.go distChecker: the process instances' own reports; overlap_ms,
//	                    hand-offs and their gaps, fenced writes
//
// # Suites
//
// `make test` (every package, -race, one shared stack): processor_test.go (churn, crash
// and restart, poison records to the dead-letter topic, startup errors, every group
// protocol, exactly-once hand-off, no duplicate output without a fault over 64 paused
// and resumed partitions, input topic deleted, output topic missing, oversize outputs),
// foundation_test.go, distributed_test.go (SIGTERM, SIGKILL, node added, SIGSTOP pause,
// stuck process), state_test.go (the table's conformance, outages, fencing; state plus
// outputs when the broker refuses the outputs; a table that lost acknowledged writes is
// caught at assignment), registry_test.go (schema-registry codecs in every format, a
// registry outage under load; registry_bench_test.go prices Avro against JSON), observability_test.go (traces in
// Jaeger), view_test.go (a processor/view View of a compacted 8-partition topic: 1M
// records over 200k keys restored, every key checked against the last value produced,
// updates followed within a bound, memory against MaxBytes by its own count and the Go
// heap, a restart restores the same; TestViewRedis: the same on 100k records with the
// table in Redis), layout_test.go (imports point one way; this map names every suite, binary and
// test it mentions).
//
// `make test-fault` (SAMSA_FAULT_TESTS=1, -run 'Fault'): eos_fault_test.go (crash loop
// at fail-points, fenced zombie, broker kills on three nodes), state_fault_test.go
// (crash sums, with outputs too in both delivery modes; Redis outage; Redis without
// persistence),
// netfault_test.go, security_fault_test.go (SASL, TLS, Redis ACL) and broker_fault_test.go
// (broker faults, the 256-partition scale run). Each logs one greppable line of figures
// ("eos-crash:", "state-crash-out:", "state-crash-eos:", "net-partition:", "broker-isr:",
// ...). The network, security, scale and broker suites (each test's doc comment says
// what it asserts):
//
//   - TestNetFaultProcessorPartition: a processor instance black-holed from the broker
//     for 60 s, in both delivery modes; TestNetFaultDistributedMargin: a distributed node
//     black-holed past its session; TestNetFaultEOSLatencyResets: exactly-once behind
//     random latency and connection resets; TestNetFaultRedisBlackhole: a checkpointed
//     worker's Redis connection black-holed under load.
//   - TestFaultSecuritySASL (SASL/SCRAM with ACLs, wrong password, missing ACLs),
//     TestFaultSecurityTLS (mutual TLS, SCRAM over TLS, transactional-id ACL,
//     distributed, Redis over TLS as an ACL user), TestFaultSecurityRedisACL (the state
//     conformance suite as a restricted Redis user; the Cluster rules are checked in
//     `make test`, TestStateRedisCluster/ACL).
//   - TestScaleFault256Partitions: a backlog through 256 partitions, throughput reported.
//   - TestBrokerFaultThreeNodes: a rolling restart under both group protocols, a broker
//     down under min.insync.replicas 3, the group coordinator SIGKILLed during commits.
//     The transaction coordinator killed mid-transaction is TestEOSFaultBrokerKill.
//
// # Harnesses (print figures, never assert timings)
//
// bench is one program whose first argument picks the scenario (go run ./integration/bench
// SCENARIO [flags]; go doc ./integration/bench):
//
//	throughput samsa vs a hand-written confluent-kafka-go loop vs goka (the default;
//	           goka runs from gokabench, its own module)
//	eos        exactly-once vs at-least-once throughput
//	mem        peak RSS against the processor's documented memory budget
//	state      checkpointed Redis state cost
//	soak       a steady rate for a long time with tracing and metrics; RSS and goroutines sampled
//	concurrency a slow handler at Concurrency 1000 vs partition order
//
// tools/ holds the Maven POM that fetches the Kafka jars, the Jaeger build, and
// composecheck (docker-compose.yml checked against the README; its own module).
package integration
