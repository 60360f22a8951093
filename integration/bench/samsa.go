package main

import (
	"context"
	"log/slog"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/metrics"
	"github.com/samsa-go/samsa/processor"
)

// noCopy returns a decoder that returns the slice it is given. The Decoder contract lets
// the framework reuse the slice after Decode, so this is only for measuring what
// codec.Bytes' copy costs.
func noCopy() codec.Decoder[[]byte] {
	return codec.DecoderFunc[[]byte](func(data []byte) ([]byte, error) { return data, nil })
}

func samsaProcessor(r run, logger *slog.Logger) (*processor.Processor[[]byte, []byte], error) {
	var dec codec.Decoder[[]byte] = codec.Bytes()
	if r.codec == "nocopy" {
		dec = noCopy()
	}
	out := processor.NewOutput(r.out, codec.Bytes(), codec.Bytes())
	// identity sends every record unchanged. Each handler has its own scratch slice for
	// onBatch, so it is made per partition when onBatch is set.
	var hdrs []processor.Header
	if r.header {
		hdrs = []processor.Header{{Key: "traceparent", Value: []byte(constantTraceparent)}}
	}
	identity := func() processor.Handler[[]byte, []byte] {
		var values [][]byte
		return processor.HandlerFunc[[]byte, []byte](func(_ context.Context, b *processor.Batch[[]byte, []byte]) error {
			r.first.mark()
			if r.onBatch != nil {
				values = values[:0]
				for i := range b.Records {
					values = append(values, b.Records[i].Value)
				}
				r.onBatch(values)
			}
			for i := range b.Records {
				rec := &b.Records[i]
				if err := out.Send(b, rec.Key, rec.Value, hdrs...); err != nil {
					return err
				}
			}
			return nil
		})
	}
	cfg := processor.Config{
		Membership:        processor.Membership{Brokers: r.brokers},
		Group:             r.group,
		BatchSize:         r.batch,
		BatchWait:         r.batchWait,
		CommitInterval:    r.commitInterval,
		MaxBufferedBytes:  r.buffer,
		ConsumerOverrides: r.consumer,
		ProducerOverrides: r.producer,
	}
	inputs := []processor.Input[[]byte, []byte]{{Topic: r.in, Key: dec, Value: dec}}
	opts := []processor.Option{processor.WithLogger(logger)}
	switch r.telemetry {
	case "otel", "trace": // every span sampled, into a batching exporter, as an application wires the SDK
		opts = append(opts, processor.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))))
	case "trace1": // as a production deployment samples: a parent-based ratio sampler
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))))
		opts = append(opts, processor.WithTracerProvider(tp))
	}
	if r.telemetry == "otel" || r.telemetry == "metrics" {
		prom, err := metrics.NewPrometheus("bench")
		if err != nil {
			return nil, err
		}
		opts = append(opts, processor.WithMeterProvider(prom.Provider))
	}
	if r.onBatch != nil {
		return processor.NewPartitioned(cfg, inputs, func(int32) processor.Handler[[]byte, []byte] { return identity() }, opts...)
	}
	return processor.New(cfg, inputs, identity(), opts...)
}

// constantTraceparent is a W3C traceparent header value: what a sampled output carries.
const constantTraceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// runSamsa runs the identity processor until ctx is cancelled.
func runSamsa(ctx context.Context, r run) error {
	p, err := samsaProcessor(r, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	return p.Run(ctx)
}
