package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/samsa-go/samsa/internal/record"
)

// SliceObserver sees one ownership of a slice of a distributed Run, from the claim after
// the assign to the release after the revoke, so the slice runner carries no tracing or
// metrics code of its own. Started and Stopped are called in that order from the slice's
// worker goroutine; Previous once, after Started, from any goroutine (it may come after
// Stopped); Restarted from any goroutine, at any time.
type SliceObserver interface {
	// Started is called when the slice's processes were started: the slice was assigned at
	// assigned, its claim record was acknowledged at offset token (the fencing token), and
	// processes instances were started at started.
	Started(token int64, processes int, assigned, started time.Time)
	// Previous is called with the headers of the record before the claim (the previous
	// owner's release), or nil when there is none or it could not be read; the start span
	// is recorded then, a child of and linked to the previous owner's stop span.
	Previous(headers []record.Header)
	// Stopped is called when the processes have returned: cancelled at stopping, all
	// returned at stopped. failure is the process error that stopped the slice, if any;
	// lost tells a lost assignment (no release record follows). The headers returned go
	// into the release record, so the next owner can link to this stop.
	Stopped(stopping, stopped time.Time, lost bool, failure error) []record.Header
	// Restarted counts a process of the slice restarted by Supervise.
	Restarted()
}

// SliceObserver returns the OTel observer of one ownership of slice of the Run name on
// node.
func (t *Telemetry) SliceObserver(name string, slice int32, node string) SliceObserver {
	attrs := []attribute.KeyValue{
		attribute.String("samsa.distributed.name", name),
		attribute.Int("samsa.distributed.slice", int(slice)),
		attribute.String("samsa.distributed.node", node),
	}
	phase := func(p string) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append(attrs[:len(attrs):len(attrs)], attribute.String("phase", p))...))
	}
	return &sliceObserver{
		t:     t,
		name:  name,
		attrs: attrs,
		slice: metric.WithAttributeSet(attribute.NewSet(attrs...)),
		start: phase("start"),
		stop:  phase("stop"),
	}
}

type sliceObserver struct {
	t                  *Telemetry
	name               string
	attrs              []attribute.KeyValue     // name, slice, node
	slice, start, stop metric.MeasurementOption // attrs, and with the hand-off phase

	// Set by Started, read by Previous and Stopped (which come after it).
	token             int64
	processes         int
	assigned, started time.Time
}

func (o *sliceObserver) Started(token int64, processes int, assigned, started time.Time) {
	o.token, o.processes, o.assigned, o.started = token, processes, assigned, started
	ctx := context.Background()
	o.t.ProcsRunning.Add(ctx, int64(processes), o.slice)
	o.t.HandoffDuration.Record(ctx, started.Sub(assigned).Seconds(), o.start)
}

func (o *sliceObserver) Previous(headers []record.Header) {
	parent := context.Background()
	var links []trace.Link
	if sc := o.t.Extract(headers); sc.IsValid() {
		parent = trace.ContextWithRemoteSpanContext(parent, sc)
		links = append(links, trace.Link{SpanContext: sc})
	}
	_, span := o.t.Tracer.Start(parent, "slice start "+o.name, trace.WithTimestamp(o.assigned), trace.WithLinks(links...),
		trace.WithAttributes(o.attrs...), trace.WithAttributes(attribute.Int64("samsa.distributed.token", o.token),
			attribute.Int("samsa.distributed.processes", o.processes)))
	span.End(trace.WithTimestamp(o.started))
}

func (o *sliceObserver) Stopped(stopping, stopped time.Time, lost bool, failure error) []record.Header {
	ctx := context.Background()
	o.t.ProcsRunning.Add(ctx, -int64(o.processes), o.slice)
	o.t.HandoffDuration.Record(ctx, stopped.Sub(stopping).Seconds(), o.stop)
	ctx, span := o.t.Tracer.Start(ctx, "slice stop "+o.name, trace.WithTimestamp(stopping),
		trace.WithAttributes(o.attrs...), trace.WithAttributes(attribute.Int64("samsa.distributed.token", o.token),
			attribute.Int("samsa.distributed.processes", o.processes), attribute.Bool("samsa.distributed.lost", lost)))
	if failure != nil {
		span.RecordError(failure)
		span.SetStatus(codes.Error, "process failed")
	}
	span.End(trace.WithTimestamp(stopped))
	var headers []record.Header
	o.t.Inject(ctx, &headers)
	return headers
}

func (o *sliceObserver) Restarted() {
	o.t.Restarts.Add(context.Background(), 1, o.slice)
}
