package distributed

import (
	"encoding/json"
	"log/slog"
	"sync"
	"time"
)

// liveness tells a node's slices when to stop their processes because the group
// coordinator stopped answering, before the broker's session timeout hands the slices to
// another node, and when it is safe to run them again.
//
// The signal is librdkafka's statistics (Hooks.Stats): the logical "GroupCoordinator"
// broker's rxidle is the time since the consumer last received anything from the
// coordinator, whose heartbeat responses arrive every HeartbeatInterval while the member
// is healthy. The broker removes a member that has not heartbeated for SessionTimeout;
// the node stops its processes once the coordinator has been silent for SessionTimeout
// minus the margin, so a GC pause, a starved CPU or a slow stop cannot turn the
// hand-off into an overlap. A timer, not the statistics, decides the stop: if the
// statistics stop coming (the poll goroutine is stalled), the deadline still passes.
//
// Silence counts only while the membership is steady: during a join the coordinator
// holds the JoinGroup request (and answers nothing) until every member rejoined, but it
// does not expire a member it holds a join for. A poll goroutine blocked in a rebalance
// callback (a revoke waiting for slow processes) delivers no statistics: past the
// threshold the node then stops its other slices' processes too, and restarts them once
// statistics show the coordinator answering, a pause but never an overlap.
//
// It is up again after two statistics samples in a row, at least a heartbeat interval
// apart, show a fresh receive and a steady group membership (join_state "steady"): a
// heartbeat answered with an error (the member was removed meanwhile) moves librdkafka
// out of the steady state before the next sample, and the lost assignment then reaches
// the slices through the engine as a revoke. The deadline is armed by the coordinator's
// first answer (no slice is assigned before it).
type liveness struct {
	threshold time.Duration // SessionTimeout - margin
	hb        time.Duration
	log       *slog.Logger

	mu        sync.Mutex
	lastRx    time.Time
	down      bool
	downCh    chan struct{} // closed when the coordinator has been silent past threshold
	upCh      chan struct{} // closed when it answers again
	freshAt   time.Time     // first of the consecutive fresh samples while down
	timer     *time.Timer
	downSince time.Time
	stopped   bool
}

func newLiveness(threshold, hb time.Duration, log *slog.Logger) *liveness {
	l := &liveness{threshold: threshold, hb: hb, log: log, downCh: make(chan struct{}), upCh: make(chan struct{})}
	close(l.upCh)
	return l
}

// signals returns the current channels: down is closed once the coordinator has been
// silent past the threshold, up once it answers again after that.
func (l *liveness) signals() (down, up <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.downCh, l.upCh
}

// stop releases the timer.
func (l *liveness) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.timer != nil {
		l.timer.Stop()
	}
}

// expire runs when the deadline passes; it goes down unless a receive moved the deadline.
func (l *liveness) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped || l.down {
		return
	}
	if wait := l.threshold - time.Since(l.lastRx); wait > 0 {
		l.timer.Reset(wait) // a receive moved the deadline
		return
	}
	l.down, l.downSince, l.freshAt = true, time.Now(), time.Time{}
	close(l.downCh)
	l.upCh = make(chan struct{})
	l.log.Warn("distributed: the group coordinator has not answered for SessionTimeout minus LivenessMargin; stopping this node's processes before the session times out",
		"silent", time.Since(l.lastRx).Round(time.Millisecond), "threshold", l.threshold)
}

// statsSample is the part of librdkafka's statistics liveness reads.
type statsSample struct {
	Brokers map[string]struct {
		Source string `json:"source"`
		RxIdle int64  `json:"rxidle"` // µs since the last receive, -1 if none yet
	} `json:"brokers"`
	Cgrp *struct {
		State     string `json:"state"`
		JoinState string `json:"join_state"`
	} `json:"cgrp"`
}

// observe takes one statistics JSON (on the engine's poll goroutine).
func (l *liveness) observe(stats string, now time.Time) {
	var s statsSample
	if err := json.Unmarshal([]byte(stats), &s); err != nil {
		l.log.Debug("distributed: unreadable librdkafka statistics", "err", err)
		return
	}
	coord, ok := s.Brokers["GroupCoordinator"]
	if !ok || coord.RxIdle < 0 {
		return // no coordinator (yet), or nothing received on this connection: no news
	}
	rx := now.Add(-time.Duration(coord.RxIdle) * time.Microsecond)
	steady := s.Cgrp != nil && s.Cgrp.State == "up" && s.Cgrp.JoinState == "steady"
	if !steady {
		// Joining: the coordinator holds a JoinGroup until every member rejoined (while a
		// slow member finishes its revoke, for up to the rebalance timeout) and answers
		// no heartbeat meanwhile, but it does not expire a member whose join it holds.
		// Silence counts only in a steady membership.
		rx = now
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	if rx.After(l.lastRx) {
		l.lastRx = rx
	}
	if l.timer == nil { // armed by the coordinator's first answer: no slice runs before it
		l.timer = time.AfterFunc(l.threshold-now.Sub(l.lastRx), l.expire)
	}
	if !l.down {
		return
	}
	if now.Sub(rx) > 2*l.hb || !steady {
		l.freshAt = time.Time{}
		return
	}
	if l.freshAt.IsZero() {
		l.freshAt = now
		return
	}
	if now.Sub(l.freshAt) < l.hb {
		return
	}
	l.down = false
	close(l.upCh)
	l.downCh = make(chan struct{})
	l.timer.Reset(l.threshold - now.Sub(l.lastRx))
	l.log.Info("distributed: the group coordinator answers again and the membership is steady; restarting the processes of the slices still owned",
		"down_for", now.Sub(l.downSince).Round(time.Millisecond))
}
