# samsa — build and test targets. `make test` is the README's test command.
GO        ?= go
PKGS      := ./...
STACK     := $(GO) run ./integration/cmd/stack
TIMEOUT   ?= 25m

.PHONY: deps test test-short test-fault test-net-fault soak vet compose-check stack kafka-jars jaeger registry quickstart bench bench-eos bench-mem bench-results

## test: vet, then unit and integration tests with -race against a real Kafka, Redis and
## Jaeger started once for all packages (or the ones named by KAFKA_BROKERS, REDIS_ADDR,
## OTEL_EXPORTER_OTLP_ENDPOINT + JAEGER_QUERY_URL).
test: deps vet compose-check
	$(STACK) run -- $(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)

## deps: install what the tests need and a bare machine lacks (redis-server, via apt when
## root or passwordless sudo is there; otherwise it says what to run and fails).
deps:
	@bash .ci/install-deps

## compose-check: load docker-compose.yml with compose-go and check it against the
## README, examples and launchers (a separate module: compose-go stays out of go.mod).
compose-check:
	cd integration/tools/composecheck && $(GO) test -count=1 ./...

## test-fault: the long fault suites (exactly-once crash loops, zombie fencing, broker
## kills, a rolling restart and a broker down under min ISR on a three-node cluster, and
## the net-fault, security and scale suites below). .ci/run runs it after make test.
test-fault: deps
	SAMSA_FAULT_TESTS=1 $(STACK) run -no-jaeger -- $(GO) test -race -count=1 -run 'Fault' -timeout 40m ./integration/

## test-net-fault: only the network fault suites (the fault proxy between a client and
## the broker or Redis), the security suites (SASL, TLS, ACLs, Redis ACL over TLS) and
## the 256-partition scale run; make test-fault runs them too.
test-net-fault: deps
	SAMSA_FAULT_TESTS=1 $(STACK) run -no-jaeger -- $(GO) test -race -count=1 -run 'NetFault|ScaleFault|FaultSecurity' -timeout 20m ./integration/

## soak: one processor at a steady rate (SOAK_RATE records/s) for SOAK_DURATION with
## tracing (to the stack's Jaeger) and metrics on; prints RSS, heap and goroutines every
## 10 s and their growth after the warm-up. Not in CI.
SOAK_DURATION ?= 30m
SOAK_RATE     ?= 10000
soak:
	$(STACK) run -- $(GO) run ./integration/bench soak -duration $(SOAK_DURATION) -rate $(SOAK_RATE)

## bench / bench-eos: the throughput and eos scenarios of integration/bench on the real
## broker (print figures; not tests). bench builds integration/gokabench (its own module:
## goka and sarama stay out of go.mod).
bench:
	$(GO) run ./integration/bench throughput

bench-eos:
	$(GO) run ./integration/bench eos

## bench-mem: peak RSS of a processor with a slow handler against its documented memory
## budget (exits 3 when the budget is exceeded).
bench-mem:
	$(GO) run ./integration/bench mem

## bench-results: integration/bench/RESULTS.md from the throughput (default settings),
## eos, concurrency and state scenarios, one after the other (run on a quiet machine).
bench-results:
	$(GO) run ./integration/bench throughput -results integration/bench/RESULTS.md
	$(GO) run ./integration/bench eos -results integration/bench/RESULTS.md
	$(GO) run ./integration/bench concurrency -results integration/bench/RESULTS.md
	$(GO) run ./integration/bench state -results integration/bench/RESULTS.md

## test-short: unit tests only, no broker (integration tests skip and say why).
test-short:
	$(GO) test -short -race -count=1 $(PKGS)

vet:
	$(GO) vet $(PKGS)

## stack: start Kafka, Redis, Jaeger and the schema registry on loopback and print the
## environment to export. STACK_FLAGS=-no-registry (or -no-jaeger, -no-redis) leaves one out.
STACK_FLAGS ?=
stack:
	$(STACK) up $(STACK_FLAGS)

## kafka-jars / jaeger / registry: fetch or build the test components ahead of time (cached).
kafka-jars:
	$(GO) test -count=1 -run TestKafkaJarsCached ./integration/stack/

jaeger:
	$(GO) test -count=1 -run TestJaegerBinaryCached ./integration/stack/

registry:
	$(GO) test -count=1 -timeout 40m -run TestRegistryBinaryCached ./integration/stack/

quickstart:
	$(GO) run ./examples/quickstart
