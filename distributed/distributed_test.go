package distributed_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/samsa-go/samsa/distributed"
	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/internal/testwait"
)

// Fast tests on the embedded broker; the multi-process fault tests run on real Kafka in
// integration/.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func broker(t testing.TB) string {
	t.Helper()
	b, err := embedded.Start()
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b.Bootstrap()
}

func node(t testing.TB, brokers, id string) *distributed.Node {
	t.Helper()
	n, err := distributed.New(distributed.Config{Membership: distributed.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, StopTimeout: 5 * time.Second}, NodeID: id, Partitions: 4})
	require.NoError(t, err)
	return n
}

// tracker is the judge: it records which instances of each process are alive.
type tracker struct {
	mu      sync.Mutex
	alive   map[int]map[string]bool // process -> node set
	overlap []string
	starts  map[int]int
	tokens  map[int][]int64
}

func newTracker() *tracker {
	return &tracker{alive: map[int]map[string]bool{}, starts: map[int]int{}, tokens: map[int][]int64{}}
}

func (tr *tracker) process(i int) distributed.Process {
	return func(ctx context.Context) error {
		info, ok := distributed.InfoFrom(ctx)
		if !ok || info.Index != i {
			return fmt.Errorf("bad info %+v", info)
		}
		tr.mu.Lock()
		if tr.alive[i] == nil {
			tr.alive[i] = map[string]bool{}
		}
		if len(tr.alive[i]) > 0 {
			tr.overlap = append(tr.overlap, fmt.Sprintf("process %d on %s while alive on %v", i, info.Node, tr.alive[i]))
		}
		tr.alive[i][info.Node] = true
		tr.starts[i]++
		tr.tokens[i] = append(tr.tokens[i], info.Token)
		tr.mu.Unlock()
		<-ctx.Done()
		tr.mu.Lock()
		delete(tr.alive[i], info.Node)
		tr.mu.Unlock()
		return nil
	}
}

func (tr *tracker) where() map[int][]string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[int][]string{}
	for i, nodes := range tr.alive {
		for n := range nodes {
			out[i] = append(out[i], n)
		}
	}
	return out
}

func start(t testing.TB, n *distributed.Node, name string, procs []distributed.Process) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- n.Run(ctx, name, procs) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(30 * time.Second):
				err = errors.New("Run did not return within 30s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func TestSlicesMoveStopBeforeStart(t *testing.T) {
	brokers := broker(t)
	tr := newTracker()
	procs := make([]distributed.Process, 10) // more processes than the 4 slices
	for i := range procs {
		procs[i] = tr.process(i)
	}
	stopA := start(t, node(t, brokers, "a"), "printers", procs)
	testwait.For(t, 30*time.Second, "all 10 running on a", func() bool { return len(tr.where()) == 10 })

	stopB := start(t, node(t, brokers, "b"), "printers", procs)
	testwait.For(t, 30*time.Second, "slices spread over a and b", func() bool {
		nodes := map[string]bool{}
		for _, w := range tr.where() {
			for _, n := range w {
				nodes[n] = true
			}
		}
		return len(tr.where()) == 10 && nodes["a"] && nodes["b"]
	})

	require.NoError(t, stopA())
	testwait.For(t, 30*time.Second, "all 10 running on b after a stopped", func() bool {
		w := tr.where()
		if len(w) != 10 {
			return false
		}
		for _, nodes := range w {
			if len(nodes) != 1 || nodes[0] != "b" {
				return false
			}
		}
		return true
	})
	require.NoError(t, stopB())

	tr.mu.Lock()
	defer tr.mu.Unlock()
	assert.Empty(t, tr.overlap, "two instances of one process alive at once")
	for i, toks := range tr.tokens {
		for j := 1; j < len(toks); j++ {
			assert.Greater(t, toks[j], toks[j-1], "process %d: a later owner's token must be higher (%v)", i, toks)
		}
	}
}

func TestProcessErrorFailsRunAfterStoppingTheRest(t *testing.T) {
	brokers := broker(t)
	tr := newTracker()
	boom := errors.New("boom")
	// Process 2 fails once 0 and 1 run.
	var started atomic.Int32
	bothRunning := make(chan struct{})
	running := func(p distributed.Process) distributed.Process {
		return func(ctx context.Context) error {
			if started.Add(1) == 2 {
				close(bothRunning)
			}
			return p(ctx)
		}
	}
	procs := []distributed.Process{running(tr.process(0)), running(tr.process(1)), func(ctx context.Context) error {
		select {
		case <-bothRunning:
			return boom
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := node(t, brokers, "a").Run(ctx, "failing", procs)
	var perr *distributed.ProcessError
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, 2, perr.Index)
	assert.EqualValues(t, 2, perr.Slice)
	assert.ErrorIs(t, err, boom)
	assert.Empty(t, tr.where(), "the other processes were stopped before Run returned")
}

// TestProcessPanicFailsRunWithItsStack: a panic is an error, not a crash; the error
// wraps ErrPanic and carries the stack.
func TestProcessPanicFailsRunWithItsStack(t *testing.T) {
	brokers := broker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := node(t, brokers, "a").Run(ctx, "panicking", []distributed.Process{func(context.Context) error { panic("kaput") }})
	var perr *distributed.ProcessError
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, 0, perr.Index)
	assert.ErrorIs(t, err, distributed.ErrPanic)
	assert.Contains(t, err.Error(), "process panicked: kaput")
	assert.Contains(t, err.Error(), "distributed_test.go", "the stack is in the error text")
}

func TestDoneProcessIsNotRestarted(t *testing.T) {
	brokers := broker(t)
	var runs atomic.Int32
	procs := []distributed.Process{func(ctx context.Context) error {
		runs.Add(1)
		return nil
	}}
	stop := start(t, node(t, brokers, "a"), "once", procs)
	testwait.For(t, 30*time.Second, "the process ran", func() bool { return runs.Load() > 0 })
	time.Sleep(time.Second) // checks that nothing happens: no second run
	require.NoError(t, stop())
	assert.EqualValues(t, 1, runs.Load())
}

func TestSuperviseRestartsWithBackoffThenGivesUp(t *testing.T) {
	brokers := broker(t)
	var mu sync.Mutex
	runs := 0
	restarts := 0
	flaky := distributed.Supervise(func(ctx context.Context) error {
		mu.Lock()
		runs++
		mu.Unlock()
		return errors.New("flaky")
	}, distributed.SuperviseOptions{Backoff: distributed.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}, MaxRestarts: 3,
		OnRestart: func(int, error) { mu.Lock(); restarts++; mu.Unlock() }})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := node(t, brokers, "a").Run(ctx, "supervised", []distributed.Process{flaky})
	require.ErrorContains(t, err, "gave up after 3 restarts: flaky")
	assert.Equal(t, 4, runs)
	assert.Equal(t, 3, restarts)
}

func TestStuckProcessFailsRunWithItsName(t *testing.T) {
	brokers := broker(t)
	n, err := distributed.New(distributed.Config{Membership: distributed.Membership{Brokers: brokers, StopTimeout: 500 * time.Millisecond, SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond}, NodeID: "a", Partitions: 2})
	require.NoError(t, err)
	release := make(chan struct{})
	var started atomic.Int32
	defer func() {
		close(release) // the stuck process returns; the engine, still holding, can stop
		wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, n.Wait(wctx))
	}()
	procs := []distributed.Process{
		func(ctx context.Context) error { started.Add(1); <-ctx.Done(); return nil },
		func(ctx context.Context) error { started.Add(1); <-ctx.Done(); <-release; return nil }, // ignores cancellation
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- n.Run(ctx, "stuck", procs) }()
	testwait.For(t, 30*time.Second, "both processes running", func() bool { return started.Load() == 2 })
	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, distributed.ErrStuck)
		assert.Contains(t, err.Error(), "process 1 (slice 1)")
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the stop timeout")
	}
}

func TestConfigValidation(t *testing.T) {
	_, err := distributed.New(distributed.Config{Membership: distributed.Membership{StopTimeout: 10 * time.Minute, Protocol: "x", Overrides: map[string]any{"enable.auto.commit": true}}, Partitions: -1})
	require.Error(t, err)
	for _, want := range []string{"Brokers is required", "Partitions = -1", "StopTimeout (10m0s) must be below MaxPollInterval", `Protocol "x"`, `Overrides["enable.auto.commit"]`} {
		assert.Contains(t, err.Error(), want)
	}
	n, err := distributed.New(distributed.Config{Membership: distributed.Membership{Brokers: "127.0.0.1:1"}})
	require.NoError(t, err)
	assert.ErrorContains(t, n.Run(context.Background(), "x", nil), "no processes")
}

func TestSliceOf(t *testing.T) {
	for _, tc := range []struct{ i, n, want int }{{0, 8, 0}, {7, 8, 7}, {8, 8, 0}, {19, 8, 3}, {2, 3, 2}} {
		assert.EqualValues(t, tc.want, distributed.SliceOf(tc.i, tc.n))
	}
}

// TestHandoffIsOneTrace: a slice moving from node a to node b shows as a stop span on a
// and a start span on b that is its child (and links to it), through the release record.
func TestHandoffIsOneTrace(t *testing.T) {
	stop, startB := handoffSpans(t)
	assert.Equal(t, stop.SpanContext().TraceID(), startB.SpanContext().TraceID(), "one trace")
	assert.Equal(t, stop.SpanContext().SpanID(), startB.Parent().SpanID())
	require.Len(t, startB.Links(), 1)
	assert.Equal(t, stop.SpanContext().SpanID(), startB.Links()[0].SpanContext.SpanID())
}

// TestHandoffWithoutPropagation: a propagator that writes nothing leaves the release
// record without trace context, so b's start span begins a trace of its own.
func TestHandoffWithoutPropagation(t *testing.T) {
	stop, startB := handoffSpans(t, distributed.WithPropagator(propagation.NewCompositeTextMapPropagator()))
	assert.NotEqual(t, stop.SpanContext().TraceID(), startB.SpanContext().TraceID())
	assert.False(t, startB.Parent().IsValid(), "a root span")
	assert.Empty(t, startB.Links())
}

// handoffSpans moves a one-slice list from node a to node b and returns a's stop span
// and b's start span.
func handoffSpans(t *testing.T, opts ...distributed.Option) (stop, startB sdktrace.ReadOnlySpan) {
	brokers := broker(t)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	mk := func(id string) *distributed.Node {
		n, err := distributed.New(distributed.Config{Membership: distributed.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond}, NodeID: id, Partitions: 1},
			append([]distributed.Option{distributed.WithTracerProvider(tp)}, opts...)...)
		require.NoError(t, err)
		return n
	}
	tr := newTracker()
	procs := []distributed.Process{tr.process(0)}
	stopA := start(t, mk("a"), "traced", procs)
	testwait.For(t, 30*time.Second, "the slice running on a", func() bool { return len(tr.where()[0]) == 1 })
	stopB := start(t, mk("b"), "traced", procs)
	waitMembers(t, brokers, "traced", 2) // b joined; the single slice stays on a
	require.NoError(t, stopA())
	testwait.For(t, 30*time.Second, "the slice running on b", func() bool { w := tr.where()[0]; return len(w) == 1 && w[0] == "b" })
	testwait.For(t, 10*time.Second, "a's stop span and b's start span", func() bool {
		for _, s := range spans.Ended() {
			node := ""
			for _, a := range s.Attributes() {
				if a.Key == "samsa.distributed.node" {
					node = a.Value.AsString()
				}
			}
			switch {
			case s.Name() == "slice stop traced" && node == "a":
				stop = s
			case s.Name() == "slice start traced" && node == "b":
				startB = s
			}
		}
		return stop != nil && startB != nil
	})
	require.NoError(t, stopB())
	return stop, startB
}

// waitMembers waits until group is stable with members members.
func waitMembers(t testing.TB, brokers, group string, members int) {
	t.Helper()
	ac, err := admin.Dial(brokers, nil, nil)
	require.NoError(t, err)
	defer ac.Close()
	testwait.ForNoError(t, 30*time.Second, fmt.Sprintf("group %s stable with %d members", group, members), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g, err := ac.DescribeGroup(ctx, group)
		if err != nil {
			return err
		}
		if g.State != "Stable" || len(g.Members) != members {
			return fmt.Errorf("state %s, %d members", g.State, len(g.Members))
		}
		return nil
	})
}
