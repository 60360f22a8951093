package samsatest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Runner is what a Driver runs: a *processor.Processor or anything with its Run.
type Runner interface {
	Run(ctx context.Context) error
}

// RunnerFunc adapts a function to Runner, for a distributed node:
//
//	samsatest.RunnerFunc(func(ctx context.Context) error { return node.Run(ctx, "jobs", processes) })
type RunnerFunc func(ctx context.Context) error

// Run calls f(ctx).
func (f RunnerFunc) Run(ctx context.Context) error { return f(ctx) }

// Driver runs instances of a processor (or of any Runner: a distributed node's Run
// wrapped in a func) against a broker, and scripts their life: add and remove instances
// (each change moves partitions between them), while the Broker injects faults. Stop
// ends every instance and reports what they returned.
//
// With the in-process broker's group coordinator, partitions move between instances
// only through membership changes, as on a real cluster: Add and Remove are how a test
// moves them, Broker.WaitBalanced how it waits for the move.
type Driver struct {
	tb    testing.TB
	start func(instance int) (Runner, error)

	mu        sync.Mutex
	instances map[int]*instance
	next      int
	errs      []error
}

type instance struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// NewDriver returns a driver whose instances are made by start (called with 0, 1, 2, …
// as instances are added). Every instance still running when tb's test ends is stopped.
func NewDriver(tb testing.TB, start func(instance int) (Runner, error)) *Driver {
	d := &Driver{tb: tb, start: start, instances: map[int]*instance{}}
	tb.Cleanup(func() { d.Stop() })
	return d
}

// Add starts a new instance and returns its number. It fails the test when start fails.
func (d *Driver) Add() int {
	d.tb.Helper()
	d.mu.Lock()
	n := d.next
	d.next++
	d.mu.Unlock()
	r, err := d.start(n)
	if err != nil {
		d.tb.Fatalf("samsatest: start instance %d: %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		in.err = r.Run(ctx)
	}()
	d.mu.Lock()
	d.instances[n] = in
	d.mu.Unlock()
	return n
}

// Remove stops instance n as a shutdown does (cancelling its Run's context) and waits up
// to timeout for Run to return. It returns what Run returned, or an error when it did
// not return in time.
func (d *Driver) Remove(n int, timeout time.Duration) error {
	d.mu.Lock()
	in, ok := d.instances[n]
	delete(d.instances, n)
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("samsatest: no running instance %d", n)
	}
	in.cancel()
	select {
	case <-in.done:
		if in.err != nil {
			in.err = fmt.Errorf("instance %d: %w", n, in.err)
		}
		return in.err
	case <-time.After(timeout):
		return fmt.Errorf("samsatest: instance %d still running %s after it was stopped", n, timeout)
	}
}

// Failed returns the first error of an instance whose Run returned by itself (not
// through Remove or Stop), or nil.
func (d *Driver) Failed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for n, in := range d.instances {
		select {
		case <-in.done:
			if in.err != nil {
				return fmt.Errorf("instance %d: %w", n, in.err)
			}
			return fmt.Errorf("instance %d: Run returned nil before it was stopped", n)
		default:
		}
	}
	return nil
}

// Running returns the numbers of the running instances.
func (d *Driver) Running() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ns []int
	for n := range d.instances {
		ns = append(ns, n)
	}
	return ns
}

// Stop stops every running instance (each bounded by a minute) and returns what they
// returned, joined. It is called when the test ends.
func (d *Driver) Stop() error {
	var errs []error
	for _, n := range d.Running() {
		if err := d.Remove(n, time.Minute); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
