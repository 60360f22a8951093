package processor

import (
	"fmt"

	"github.com/samsa-go/samsa/internal/member"
)

// Policy says what happens to a record (or batch) that fails: decoding, handling or
// producing its outputs. The zero Policy is Stop.
//
// A failed batch is retried as a whole under Retry. When it still fails, the framework
// runs its records one at a time to find the failing ones, and the final policy (Stop,
// Skip or DeadLetter) applies to each of those alone; the others are processed normally.
// Decode failures are deterministic and go straight to the final policy.
//
// A decode or handler failure matching codec.ErrUnavailable (a codec's dependency, such
// as a schema registry, did not answer) is no record's fault: no policy applies to it.
// The batch waits with the policy's backoff (Retry's, else the default) and tries again,
// without limit and with nothing committed, until the dependency answers or the
// partition is revoked or the processor stops.
type Policy struct {
	kind    policyKind
	topic   string
	retries int
	backoff Backoff
	then    *Policy
}

type policyKind int

const (
	kindStop policyKind = iota
	kindSkip
	kindDeadLetter
	kindRetry
)

// Stop makes Run return an *Error naming the failing record; nothing of its batch is
// committed, so a restart reads it again. This is the default.
func Stop() Policy { return Policy{kind: kindStop} }

// Skip drops the failing record: it is logged (without its payload) and counted, and its
// offset is committed with the batch.
func Skip() Policy { return Policy{kind: kindSkip} }

// DeadLetter writes the failing record to topic: the original key, value and headers,
// plus headers naming the error, the stage and the source topic, partition, offset,
// timestamp and group (see the Header* constants). The dead-letter write is acknowledged
// before the input offset is committed; if it fails, Run stops.
func DeadLetter(topic string) Policy { return Policy{kind: kindDeadLetter, topic: topic} }

// Retry retries a failed batch up to retries more times, waiting b between attempts,
// then applies then (which must not be another Retry). A handler error marked with
// Permanent is not retried: its batch goes to then at once.
//
// Outputs the broker refused for good (a non-retriable produce error) are produced
// again under Retry. With MaxInFlightBatches > 1, later batches of the partition may
// have been produced meanwhile, so a resent output lands after them: per-key order holds
// across such a failure only with MaxInFlightBatches = 1. (Retriable produce errors are
// retried by the producer itself, in order, and never reach the policy.)
func Retry(retries int, b Backoff, then Policy) Policy {
	return Policy{kind: kindRetry, retries: retries, backoff: b, then: &then}
}

// final is the policy applied once retries are exhausted.
func (p Policy) final() Policy {
	if p.kind == kindRetry {
		return *p.then
	}
	return p
}

func (p Policy) String() string {
	switch p.kind {
	case kindSkip:
		return "Skip"
	case kindDeadLetter:
		return fmt.Sprintf("DeadLetter(%q)", p.topic)
	case kindRetry:
		return fmt.Sprintf("Retry(%d, then %v)", p.retries, *p.then)
	}
	return "Stop"
}

func (p Policy) validate() error {
	switch p.kind {
	case kindDeadLetter:
		if p.topic == "" {
			return fmt.Errorf("ErrorPolicy: DeadLetter needs a topic")
		}
	case kindRetry:
		if p.retries < 1 {
			return fmt.Errorf("ErrorPolicy: Retry needs at least 1 retry, got %d", p.retries)
		}
		if p.then == nil || p.then.kind == kindRetry {
			return fmt.Errorf("ErrorPolicy: Retry must end in Stop, Skip or DeadLetter")
		}
		if err := validateBackoff(p.backoff); err != nil {
			return err
		}
		return p.then.validate()
	}
	return nil
}

// Backoff is an exponential backoff with full jitter: the n-th wait is a random duration
// in [0, min(Max, Initial·2ⁿ)]. distributed.Backoff is the same type.
type Backoff = member.Backoff

// validateBackoff checks a policy's backoff.
func validateBackoff(b Backoff) error {
	if b.Initial < 0 || b.Max < 0 {
		return fmt.Errorf("ErrorPolicy: Backoff durations must not be negative")
	}
	return nil
}
