package processor

import (
	"context"
	"errors"
	"fmt"

	"github.com/samsa-go/samsa/internal/kitlink"
	"github.com/samsa-go/samsa/internal/record"
)

// The test kit (samsatest) drives a processor's handler and error policy without a
// broker through these hooks; see internal/kitlink.
func init() {
	kitlink.NewRunner = func(p any, partition int32) (kitlink.Runner, error) {
		kp, ok := p.(interface {
			kitRunner(partition int32) kitlink.Runner
		})
		if !ok {
			return nil, fmt.Errorf("samsatest: %T is not a *processor.Processor", p)
		}
		return kp.kitRunner(partition), nil
	}
	kitlink.OutputCodecs = func(o any) (key, value any, ok bool) {
		ko, ok := o.(interface{ codecs() (any, any) })
		if !ok {
			return nil, nil, false
		}
		key, value = ko.codecs()
		return key, value, true
	}
}

func (o Output[K, V]) codecs() (key, value any) {
	if o.key != nil {
		key = o.key
	}
	if o.value != nil {
		value = o.value
	}
	return key, value
}

// kitRunner is partition's runner as a running processor would build it, with a handler
// from the processor's factory, its error policy, group and telemetry.
func (p *Processor[K, V]) kitRunner(partition int32) kitlink.Runner {
	return &kitRunner[K, V]{
		r: &runner[K, V]{inputs: p.inputs, h: p.factory(partition), policy: p.cfg.ErrorPolicy,
			group: p.cfg.Group, slot: partition, log: p.log, spare: &p.outs,
			obs: p.tel.ProcessorObserver(p.cfg.Group, partition)},
	}
}

type kitRunner[K, V any] struct {
	r *runner[K, V]
}

func (k *kitRunner[K, V]) Handle(ctx context.Context, inputs []record.Message) ([]record.Message, int, error) {
	k.r.ctx, k.r.wait = ctx, ctx
	calls := 0
	h := k.r.h
	k.r.h = HandlerFunc[K, V](func(ctx context.Context, b *Batch[K, V]) error {
		calls++
		return h.Handle(ctx, b)
	})
	defer func() { k.r.h = h }()
	outs, err := k.r.handle(ctx, inputs)
	if errors.Is(err, errAbandoned) {
		err = ctx.Err()
	}
	// The runner reuses its output slices; the caller keeps these.
	return append([]record.Message(nil), outs...), calls, err
}

func (k *kitRunner[K, V]) DeadLetterTopic() string {
	if final := k.r.policy.final(); final.kind == kindDeadLetter {
		return final.topic
	}
	return ""
}
