// Package kitlink lets the public test kit (samsatest) reach the processor's runner and
// an output's codecs without widening processor's public API. processor sets the
// functions in its init; samsatest imports processor, so they are set whenever the kit
// runs.
package kitlink

import (
	"context"

	"github.com/samsa-go/samsa/internal/record"
)

// Runner is one partition's decode → handler → error-policy stage, without a broker.
type Runner interface {
	// Handle runs a batch of raw inputs through decoding, the handler and the error
	// policy, and returns what would be produced (dead letters included) and the error
	// that would stop the processor, if any. Calls counts the handler's invocations.
	Handle(ctx context.Context, inputs []record.Message) (outs []record.Message, calls int, err error)
	// DeadLetterTopic is the policy's dead-letter topic, "" without one.
	DeadLetterTopic() string
}

var (
	// NewRunner returns the runner of partition of p, a *processor.Processor[K, V]. It
	// fails when p is not one.
	NewRunner func(p any, partition int32) (Runner, error)
	// OutputCodecs returns the key and value encoders of o, a processor.Output[K, V]
	// (each a codec.Encoder of the output's type, or nil).
	OutputCodecs func(o any) (key, value any, ok bool)
)
