package distributed_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/samsa-go/samsa/distributed"
	"github.com/samsa-go/samsa/internal/testwait"
)

// startSpans keeps, for every "slice start" span of a later owner (token > 0), how long
// the start took (assign → processes started: the span's own length) and how long until
// the span was recorded with its link to the previous owner (assign → span ended).
type startSpans struct {
	mu          sync.Mutex
	start, link []time.Duration
}

func (s *startSpans) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (s *startSpans) Shutdown(context.Context) error                  { return nil }
func (s *startSpans) ForceFlush(context.Context) error                { return nil }
func (s *startSpans) OnEnd(span sdktrace.ReadOnlySpan) {
	now := time.Now()
	if len(span.Name()) < 12 || span.Name()[:12] != "slice start " {
		return
	}
	for _, a := range span.Attributes() {
		if a.Key == "samsa.distributed.token" && a.Value.AsInt64() == 0 {
			return // a first owner: no previous record to read
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start = append(s.start, span.EndTime().Sub(span.StartTime()))
	s.link = append(s.link, now.Sub(span.StartTime()))
}

// BenchmarkHandoffStart moves 8 slices back and forth between two nodes on the embedded
// broker (a new node joins, the old one stops, every slice ends up on the new one), with a
// recording tracer, and reports the start of a later owner: assign → processes started
// (the start phase of samsa.distributed.handoff.duration) and assign → start span
// recorded with its link to the previous owner's release. A figure, not an assertion:
//
//	go test -run XXX -bench BenchmarkHandoffStart -benchtime 1x ./distributed/
func BenchmarkHandoffStart(b *testing.B) {
	brokers := broker(b)
	spans := &startSpans{}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	tr := newTracker()
	procs := make([]distributed.Process, 8)
	for i := range procs {
		procs[i] = tr.process(i)
	}
	mk := func(id string) *distributed.Node {
		n, err := distributed.New(distributed.Config{Membership: distributed.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond}, NodeID: id, Partitions: 8}, distributed.WithTracerProvider(tp))
		require.NoError(b, err)
		return n
	}
	on := func(id string) func() bool {
		return func() bool {
			w := tr.where()
			if len(w) != len(procs) {
				return false
			}
			for _, nodes := range w {
				if len(nodes) != 1 || nodes[0] != id {
					return false
				}
			}
			return true
		}
	}
	const rounds = 6
	old := "n0"
	stopOld := start(b, mk(old), "bench", procs)
	testwait.For(b, 30*time.Second, "every slice on "+old, on(old))
	b.ResetTimer()
	for i := range b.N * rounds {
		id := "n" + string(rune('1'+i%9))
		stopNew := start(b, mk(id), "bench", procs)
		testwait.For(b, 30*time.Second, fmt.Sprintf("round %d: some slices on %s", i, id), func() bool {
			for _, nodes := range tr.where() {
				if slices.Contains(nodes, id) {
					return true
				}
			}
			return false
		})
		require.NoError(b, stopOld())
		testwait.For(b, 30*time.Second, fmt.Sprintf("round %d: every slice on %s", i, id), on(id))
		old, stopOld = id, stopNew
	}
	b.StopTimer()
	require.NoError(b, stopOld())
	spans.mu.Lock()
	defer spans.mu.Unlock()
	p := func(d []time.Duration, q float64) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
	}
	require.NotEmpty(b, spans.start)
	b.ReportMetric(float64(len(spans.start)), "starts")
	b.ReportMetric(p(spans.start, 0.5), "start_p50_ms")
	b.ReportMetric(p(spans.start, 1), "start_max_ms")
	b.ReportMetric(p(spans.link, 0.5), "link_p50_ms")
	b.ReportMetric(p(spans.link, 1), "link_max_ms")
}
