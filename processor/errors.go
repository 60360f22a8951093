package processor

import (
	"errors"
	"fmt"
	"github.com/samsa-go/samsa/internal/member"
)

// Stage names where processing failed.
type Stage string

// Stages of a batch, in order.
const (
	StageDecode     Stage = "decode"      // a key or value decoder failed
	StageHandle     Stage = "handle"      // the handler returned an error or panicked
	StageEncode     Stage = "encode"      // an output encoder failed (returned by Send)
	StageProduce    Stage = "produce"     // an output was not acknowledged by the broker
	StageDeadLetter Stage = "dead-letter" // writing to the dead-letter topic failed
	StageCommit     Stage = "commit"      // storing or committing offsets failed
	StageEffects    Stage = "effects"     // making a batch's staged state effects failed (see WithCheckpoint)
)

// Error is a processing failure of one record (or of the batch starting at Offset),
// as Run returns it under the Stop policy. The cause is reachable with errors.As and
// errors.Is, including the client's kafka.Error for produce failures.
type Error struct {
	Topic     string
	Partition int32
	Offset    int64
	Stage     Stage
	Err       error
}

func (e *Error) Error() string {
	if e.Partition < 0 {
		return fmt.Sprintf("processor: %s to %q: %v", e.Stage, e.Topic, e.Err)
	}
	return fmt.Sprintf("processor: %s failed at %s[%d]@%d: %v", e.Stage, e.Topic, e.Partition, e.Offset, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrClosed is returned by Run after Close, or when Run is called a second time.
var ErrClosed = errors.New("processor: closed")

// ErrPanic is wrapped by the error a handler's panic becomes ("handler panicked: <value>"
// and the panicking goroutine's stack): errors.Is(err, ErrPanic) tells a panic from a
// returned error. It is distributed.ErrPanic too.
var ErrPanic = member.ErrPanic

var errNoEncoder = errors.New("output declared without a value encoder")

// ErrPermanent marks a handler error that retrying cannot fix (a malformed record, a
// rule the data breaks): under Retry, a batch failing with it goes straight to the
// policy's final step instead of waiting out its retries. Wrap an error with Permanent
// and test for it with errors.Is.
var ErrPermanent = errors.New("permanent")

// Permanent marks err as permanent (see ErrPermanent); errors.Is(Permanent(err), err)
// holds and the message is err's. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ error }

func (e permanentError) Unwrap() []error { return []error{e.error, ErrPermanent} }
