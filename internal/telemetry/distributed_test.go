package telemetry

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestSliceObserverHandoff: a slice moving from node a to node b gives a's stop span (in
// the release headers) and b's start span, its child and linked to it, with the slice
// attributes, and the running, hand-off duration and restart instruments.
func TestSliceObserverHandoff(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	metrics := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics))
	tel := New(tp, mp, nil)
	t0 := time.Now()
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

	a := tel.SliceObserver("printers", 3, "a")
	a.Started(0, 2, ms(0), ms(5))
	a.Previous(nil)
	a.Restarted()
	release := a.Stopped(ms(100), ms(130), false, errors.New("boom"))
	require.NotEmpty(t, release, "the release record carries the stop span")

	b := tel.SliceObserver("printers", 3, "b")
	b.Started(7, 2, ms(200), ms(210))
	b.Previous(release)

	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans.Ended() {
		byName[s.Name()+" "+attrOf(s.Attributes(), "samsa.distributed.node").AsString()] = s
	}
	require.Len(t, byName, 3)
	startA, stopA, startB := byName["slice start printers a"], byName["slice stop printers a"], byName["slice start printers b"]
	require.NotNil(t, startA)
	require.NotNil(t, stopA)
	require.NotNil(t, startB)

	assert.Equal(t, ms(0), startA.StartTime())
	assert.Equal(t, ms(5), startA.EndTime())
	assert.Empty(t, startA.Links(), "a first owner links to nothing")
	assert.False(t, startA.Parent().IsValid())
	assert.EqualValues(t, 0, attrOf(startA.Attributes(), "samsa.distributed.token").AsInt64())

	assert.Equal(t, ms(100), stopA.StartTime())
	assert.Equal(t, ms(130), stopA.EndTime())
	assert.Equal(t, "printers", attrOf(stopA.Attributes(), "samsa.distributed.name").AsString())
	assert.EqualValues(t, 3, attrOf(stopA.Attributes(), "samsa.distributed.slice").AsInt64())
	assert.EqualValues(t, 2, attrOf(stopA.Attributes(), "samsa.distributed.processes").AsInt64())
	assert.False(t, attrOf(stopA.Attributes(), "samsa.distributed.lost").AsBool())
	assert.Equal(t, "process failed", stopA.Status().Description)
	require.Len(t, stopA.Events(), 1, "the failure is recorded")

	assert.Equal(t, stopA.SpanContext().TraceID(), startB.SpanContext().TraceID(), "one trace")
	assert.Equal(t, stopA.SpanContext().SpanID(), startB.Parent().SpanID())
	require.Len(t, startB.Links(), 1)
	assert.Equal(t, stopA.SpanContext().SpanID(), startB.Links()[0].SpanContext.SpanID())
	assert.EqualValues(t, 7, attrOf(startB.Attributes(), "samsa.distributed.token").AsInt64())

	var rm metricdata.ResourceMetrics
	require.NoError(t, metrics.Collect(context.Background(), &rm))
	got := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			got[m.Name] = m
		}
	}
	running := got["samsa.distributed.processes.running"]
	assert.Equal(t, "{process}", running.Unit)
	perNode := map[string]int64{}
	for _, dp := range running.Data.(metricdata.Sum[int64]).DataPoints {
		node, _ := dp.Attributes.Value("samsa.distributed.node")
		perNode[node.AsString()] = dp.Value
	}
	assert.Equal(t, map[string]int64{"a": 0, "b": 2}, perNode)

	handoff := got["samsa.distributed.handoff.duration"]
	assert.Equal(t, "s", handoff.Unit)
	phases := map[string]uint64{}
	for _, dp := range handoff.Data.(metricdata.Histogram[float64]).DataPoints {
		phase, _ := dp.Attributes.Value("phase")
		phases[phase.AsString()] += dp.Count
	}
	assert.Equal(t, map[string]uint64{"start": 2, "stop": 1}, phases)

	restarts := got["samsa.distributed.restarts"]
	assert.Equal(t, "{restart}", restarts.Unit)
	points := restarts.Data.(metricdata.Sum[int64]).DataPoints
	require.Len(t, points, 1)
	assert.EqualValues(t, 1, points[0].Value)
	slice, _ := points[0].Attributes.Value("samsa.distributed.slice")
	assert.EqualValues(t, 3, slice.AsInt64())
}

func attrOf(attrs []attribute.KeyValue, key attribute.Key) attribute.Value {
	for _, a := range attrs {
		if a.Key == key {
			return a.Value
		}
	}
	return attribute.Value{}
}
