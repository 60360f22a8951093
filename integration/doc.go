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
//	procworker   at-least-once identity processor; output value "<in value>|<partition>|<offset>|<pid>"
//	eosworker    the same in exactly-once mode; build with -tags chaos for fail-points ($SAMSA_FAILPOINT)
//	sumworker    checkpointed running sums per key in a Redis state.Table
//	distnode     one node of a distributed cluster; its processes report to a checker over a Unix socket
//
// The tests build them with the go tool into a temp dir (buildProcworker,
// buildEOSWorker, buildDistnode, goBuild).
//
// # Checkers and helpers (test files)
//
//	helpers_test.go    topics, end and committed offsets, the idempotent test producer
//	checker_test.go    seqProducer (keyed, sequenced input), readTopic, tallySeq (lost,
//	                   duplicates, per-key order), waitCommitted, worker logs
//	eos_fault_test.go  eosEnv, topicReader (live read_committed reader), checkEOS
//	                   (output == input exactly, order, running sums, aborted_visible),
//	                   waitTxnsFinished (no open transaction: last stable offset == end)
//	distcheck_test.go  distChecker: the process instances' own reports; overlap_ms,
//	                   hand-offs and their gaps, fenced writes
//	state_fault_test.go sfEnv, sum checks against Redis
//
// # Suites
//
// `make test` (every package, -race, one shared stack): processor_test.go (churn, crash
// and restart, poison records to the dead-letter topic, startup errors),
// protocols_test.go, eos_test.go, foundation_test.go, distributed_test.go (SIGTERM,
// SIGKILL, node added, SIGSTOP pause, stuck process), state_test.go, observability_test.go
// (traces in Jaeger), layout_test.go.
//
// `make test-fault` (SAMSA_FAULT_TESTS=1, -run 'Fault'): eos_fault_test.go (crash loop
// at fail-points, fenced zombie, broker kills on three nodes), state_fault_test.go
// (crash sums, Redis outage, Redis without persistence), netfault_test.go (an instance
// cut off from the broker by the proxy, at-least-once and exactly-once; a distributed
// node cut off: its stop-before-takeover margin, also CPU-starved; the Redis connection
// cut off; exactly-once under random latency and connection resets), security_fault_test.go (SASL/SCRAM and ACLs: right and wrong credentials,
// missing topic and group ACLs), security_tls_fault_test.go (mutual TLS and SASL_SSL:
// both delivery modes, the transactional-id ACL, distributed, a checkpoint on Redis over
// TLS as a restricted ACL user; the state suite under the minimal Redis ACL),
// scale_fault_test.go (256 partitions) and broker_fault_test.go (three nodes: a clean
// rolling restart under the classic and the KIP-848 protocol, a broker down for 30 s
// under an output with min.insync.replicas 3 with the committed offsets sampled against
// the outputs' broker append times, the group coordinator SIGKILLed during commits). Each logs one
// greppable line of figures ("eos-crash:", "net-partition:", "broker-isr:", ...).
//
// # Harnesses (print figures, never assert timings)
//
//	bench      samsa vs a hand-written confluent-kafka-go loop vs goka (gokabench, own module)
//	eosbench   exactly-once vs at-least-once throughput
//	membench   peak RSS against the processor's documented memory budget
//	statebench checkpointed Redis state cost
//	soak       a steady rate for a long time with tracing and metrics; RSS and goroutines sampled
//
// tools/ holds the Maven POM that fetches the Kafka jars, the Jaeger build, and
// composecheck (docker-compose.yml checked against the README; its own module).
package integration
