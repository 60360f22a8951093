package distributed

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stats builds the part of a librdkafka statistics JSON liveness reads.
func stats(rxIdle time.Duration, joinState string) string {
	return fmt.Sprintf(`{"name":"c","brokers":{"127.0.0.1:9092/1":{"source":"learned","rxidle":5},"GroupCoordinator":{"source":"logical","rxidle":%d}},"cgrp":{"state":"up","join_state":%q}}`,
		rxIdle.Microseconds(), joinState)
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestLiveness: the node goes down once the coordinator has been silent past the
// threshold, by the timer alone (no statistics needed); receives move the deadline; it
// comes up only after two fresh samples a heartbeat apart with a steady membership; a
// sample without a coordinator, or unreadable, is no news.
func TestLiveness(t *testing.T) {
	const threshold, hb = 300 * time.Millisecond, 50 * time.Millisecond
	l := newLiveness(threshold, hb, slog.New(slog.DiscardHandler))
	defer l.stop()

	down, up := l.signals()
	require.True(t, closed(up))
	l.observe(`{"brokers":{}}`, time.Now()) // no coordinator yet: not armed
	l.observe(`not json`, time.Now())
	time.Sleep(threshold + 100*time.Millisecond) // checks that nothing happens: past the threshold, still up
	require.False(t, closed(down), "not armed before the coordinator's first answer")

	start := time.Now()
	l.observe(stats(0, "steady"), start) // armed
	for i := 0; i < 5; i++ {             // receives keep it up past the threshold
		time.Sleep(100 * time.Millisecond) // the scenario: a receive every 100 ms
		l.observe(stats(20*time.Millisecond, "steady"), time.Now())
	}
	require.False(t, closed(down), "a coordinator answering keeps the node up")

	silentFrom := time.Now()
	l.observe(stats(0, "steady"), silentFrom)
	l.observe(stats(-1*time.Microsecond, "steady"), time.Now()) // reconnected, nothing received: no news
	select {
	case <-down:
	case <-time.After(5 * time.Second):
		t.Fatal("never went down")
	}
	// Down at the threshold: not before it (the last receive was at silentFrom), and
	// within the wait's bound after it.
	assert.GreaterOrEqual(t, time.Since(silentFrom), threshold, "down before the threshold")
	_, up = l.signals()
	require.False(t, closed(up))

	// Stale receives, or a membership that is not steady, do not bring it up.
	l.observe(stats(threshold, "steady"), time.Now())
	l.observe(stats(0, "wait-join"), time.Now())
	time.Sleep(hb) // the scenario: the second sample a heartbeat after the first
	l.observe(stats(0, "wait-join"), time.Now())
	require.False(t, closed(up))

	// A join in progress counts as alive (the coordinator holds the JoinGroup request
	// and answers nothing meanwhile): it moves the deadline but does not bring it up.
	l2 := newLiveness(threshold, hb, slog.New(slog.DiscardHandler))
	defer l2.stop()
	l2.observe(stats(0, "steady"), time.Now())
	for i := 0; i < 5; i++ {
		time.Sleep(100 * time.Millisecond) // the scenario: a sample every 100 ms, past the threshold
		l2.observe(stats(time.Duration(i+1)*100*time.Millisecond, "wait-join"), time.Now())
	}
	d2, _ := l2.signals()
	require.False(t, closed(d2), "silence during a join is not counted")

	// Two fresh, steady samples a heartbeat apart do.
	l.observe(stats(0, "steady"), time.Now())
	require.False(t, closed(up), "one sample is not enough")
	time.Sleep(hb) // the scenario: the second sample a heartbeat after the first
	l.observe(stats(time.Millisecond, "steady"), time.Now())
	require.True(t, closed(up))
	down, _ = l.signals()
	require.False(t, closed(down), "a new down channel")

	// And it can go down again.
	select {
	case <-down:
	case <-time.After(5 * time.Second):
		t.Fatal("never went down the second time")
	}
}
