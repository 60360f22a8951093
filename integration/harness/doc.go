// Package harness is the machinery integration/'s suites stand on, so that a suite file
// holds only its scenarios. It is not a test package (the suites and integration/bench
// import it) and nothing outside integration/ imports it (TestLayout checks).
//
//	gate.go     suite gates: RequireReal and RequireRedis (skipped in -short mode),
//	            RequireFaultSuite (SAMSA_FAULT_TESTS=1), Seed ($SAMSA_SEED to replay a run)
//	kafka.go    an admin client, topic creation with a wait for every partition's leader,
//	            end offsets, committed offsets (Probe, WaitCommitted, SampleCommits),
//	            RunUntilCommitted, the idempotent test producer, ProduceMessages,
//	            delivery-report draining,
//	            last stable offsets (WaitTxnsFinished), partition leaders and group
//	            coordinators
//	read.go     Rec and ReadTopic (read back to the end offsets), ReadCommittedTopic, and
//	            TopicReader: a live reader at one isolation level, recording arrivals
//	            (WaitSeen: a worker's first output)
//	seq.go      SeqProducer (keyed input, sequenced or the caller's, paced, held at a
//	            limit) and TallySeq: lost, duplicates and per-key order of an identity
//	            processor's outputs
//	verdict.go  CheckEOS and AssertExactlyOnce: an exactly-once run's output == input,
//	            in order, running sums, aborted_visible
//	sums.go     SumTable: the Redis table of integration/worker -mode sum, its applied
//	            offsets, and CheckSums and CheckOutputs against the input read back
//	env.go      StartKafka: a test's own cluster, closed at its end
//	worker.go   worker OS processes: GoBuild and Build, StartWorker (SIGKILLed by PID at
//	            the test's end), Alive, ExitDesc and KilledBy (how one ended), logs
//	            (TailFile, LogOnFailure, WorkerLog, NewFileLog, CountInFile), StartBuilt and EnvBin
//	            (a build beside a component's start; env(1) to set a worker's fail-point)
//
// Functions that judge take a testing.TB and fail it; the others return errors.
package harness
