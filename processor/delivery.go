package processor

import (
	"errors"
	"fmt"

	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
)

// remedy is what the error policy does about a batch some of whose outputs the broker
// did not acknowledge.
type remedy int

const (
	// remedyResend produces the failed outputs again, after the Retry policy's backoff.
	remedyResend remedy = iota + 1
	// remedyIsolate produces the failed outputs one at a time first: a broker refuses a
	// whole produce request for one record it will never take (over max.message.bytes,
	// say), failing the records that only shared the request with it. The policy then
	// decides again on the outputs refused alone.
	remedyIsolate
	// remedySkip gives the failed outputs up: the batch settles without them.
	remedySkip
	// remedyDeadLetter sends the inputs whose outputs failed to the dead-letter topic,
	// as the batch's next delivery round.
	remedyDeadLetter
	// remedyStop stops the processor with the decision's error.
	remedyStop
)

// decision is the error policy's answer for a batch whose outputs failed.
type decision struct {
	remedy  remedy
	attempt int    // remedyResend: the backoff's attempt (0 for the first resend)
	topic   string // remedyDeadLetter: the dead-letter topic
	err     error  // remedyStop: what Run returns
}

// failedRound is a delivery round of a batch that ended with outputs not acknowledged:
// all the policy needs to decide, and nothing it could change.
type failedRound struct {
	first        *record.Message // the batch's first input: where the error points
	round        int             // delivery rounds that failed so far, this one included
	deadLettered bool            // this round sent dead letters, not the batch's outputs
	isolated     bool            // failed holds only outputs the broker refused alone
	err          error           // the round's first delivery error
	topic        string          // the topic of the first output not acknowledged
	failed       int             // outputs not acknowledged
}

// decide is the delivery-failure step: given a failed round, it returns the remedy the
// policy prescribes. It has no effects; the pipeline carries the remedy out (waits the
// backoff, produces again through the sink, asks the runner which inputs the failed
// outputs came from), so each part can be tested on its own.
//
// In order: a producer that failed fatally stops the processor (no policy can make
// progress, and skipping would drop outputs of records handled fine); Retry resends
// while it has attempts left; dead letters that fail stop the processor, and so does an
// output topic the broker refuses as a whole (missing, not authorized); before a
// final Skip or DeadLetter gives records up, outputs that failed together for a request
// the broker refused are produced one at a time; then the final policy applies.
func decide(pol Policy, r failedRound) decision {
	stop := &Error{Topic: r.first.Topic, Partition: r.first.Partition, Offset: r.first.Offset, Stage: StageProduce, Err: r.err}
	if errors.Is(r.err, produce.ErrFatal) {
		return decision{remedy: remedyStop, err: stop}
	}
	if pol.kind == kindRetry && r.round <= pol.retries && !r.isolated {
		return decision{remedy: remedyResend, attempt: r.round - 1}
	}
	if r.deadLettered {
		stop.Stage = StageDeadLetter // the dead-letter writes themselves failed
		return decision{remedy: remedyStop, err: stop}
	}
	if produce.RefusesTopic(r.err) {
		// The output topic is missing or closed to this client: every record sent there
		// fails alike, so no record is to blame. Skipping or dead-lettering would hand
		// good records to the policy for the processor's misconfiguration.
		stop.Err = fmt.Errorf("output topic %q refused (missing, invalid or not authorized; no record is to blame): %w", r.topic, r.err)
		return decision{remedy: remedyStop, err: stop}
	}
	final := pol.final()
	if final.kind != kindStop && !r.isolated && r.failed > 1 && produce.RefusesRequest(r.err) {
		return decision{remedy: remedyIsolate}
	}
	switch final.kind {
	case kindSkip:
		return decision{remedy: remedySkip}
	case kindDeadLetter:
		return decision{remedy: remedyDeadLetter, topic: final.topic}
	}
	return decision{remedy: remedyStop, err: stop}
}
