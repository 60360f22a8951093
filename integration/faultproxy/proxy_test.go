package faultproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// echoServer echoes every line it reads and counts the bytes it received.
func echoServer(t *testing.T) (addr string, received func() int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	got := make(chan int, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadBytes('\n')
					got <- len(line)
					if err != nil {
						return
					}
					if _, err := c.Write(line); err != nil {
						return
					}
				}
			}()
		}
	}()
	var total int64
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), func() int64 {
		for {
			select {
			case n := <-got:
				total += int64(n)
			default:
				return total
			}
		}
	}
}

func roundTrip(t *testing.T, c net.Conn, msg string, timeout time.Duration) (string, error) {
	t.Helper()
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, err
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestProxyForwardsAndDelays(t *testing.T) {
	target, _ := echoServer(t)
	p, err := Start(target)
	require.NoError(t, err)
	defer p.Close()

	c := dial(t, p)
	line, err := roundTrip(t, c, "hello", 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "hello\n", line)

	p.Delay(Up, 150*time.Millisecond)
	p.Delay(Down, 100*time.Millisecond)
	start := time.Now()
	line, err = roundTrip(t, c, "slow", 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "slow\n", line)
	assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond, "both directions' delays apply")

	// Jitter varies the latency and keeps the order.
	p.Delay(Both, 0)
	p.Jitter(Up, 100*time.Millisecond)
	for i := range 5 {
		line, err = roundTrip(t, c, fmt.Sprint("j", i), 5*time.Second)
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprint("j", i, "\n"), line)
	}
	p.Heal()
	want := int64(len("hello\nslow\nj0\nj1\nj2\nj3\nj4\n"))
	assert.Eventually(t, func() bool { // counted just after each write
		accepted, up, down := p.Stats()
		return accepted == 1 && up == want && down == want
	}, 5*time.Second, 5*time.Millisecond)
}

// A black hole holds bytes without forwarding them (the client's writes succeed, no
// answer comes) until Heal, which forwards them; one direction can be held alone.
func TestProxyBlackhole(t *testing.T) {
	target, received := echoServer(t)
	p, err := Start(target)
	require.NoError(t, err)
	defer p.Close()
	c := dial(t, p)

	p.Blackhole(Up)
	_, err = roundTrip(t, c, "held", 300*time.Millisecond)
	require.ErrorIs(t, err, errTimeout(err), "no answer through a black hole")
	assert.Zero(t, received(), "the target got nothing")

	// A connection opened during the black hole is accepted and held too.
	c2 := dial(t, p)
	_, err = roundTrip(t, c2, "late", 300*time.Millisecond)
	require.ErrorIs(t, err, errTimeout(err))

	p.Heal()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "held\n", line, "held bytes are forwarded once healed")

	// Responses only: the target receives, the client hears nothing.
	c3 := dial(t, p)
	before := received()
	p.Blackhole(Down)
	_, err = roundTrip(t, c3, "one-way", 300*time.Millisecond)
	require.ErrorIs(t, err, errTimeout(err))
	require.Eventually(t, func() bool { return received() > before }, 5*time.Second, 10*time.Millisecond, "the request went through")
	p.Heal()
}

func errTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errors.New("want a timeout")
}

// Reset aborts open connections with a TCP reset; the proxy keeps accepting.
func TestProxyReset(t *testing.T) {
	target, _ := echoServer(t)
	p, err := Start(target)
	require.NoError(t, err)
	defer p.Close()
	c := dial(t, p)
	_, err = roundTrip(t, c, "a", 5*time.Second)
	require.NoError(t, err)

	assert.Equal(t, 1, p.Reset())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err)
	assert.True(t, errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF), "reset seen by the client: %v", err)

	line, err := roundTrip(t, dial(t, p), "again", 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "again\n", line)
}

// A target that is down is refused as it would be; Close is idempotent and waits for
// every goroutine, black-holed ones included.
func TestProxyTargetDownAndClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	ln.Close()
	p, err := Start(dead)
	require.NoError(t, err)
	if c, err := net.Dial("tcp", p.Addr()); err == nil { // the reset may come before or after connect returns
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		require.Error(t, err)
		var ne net.Error
		assert.False(t, errors.As(err, &ne) && ne.Timeout(), "refused, not held: %v", err)
		c.Close()
	}

	target, _ := echoServer(t)
	p.SetTarget(target)
	c2 := dial(t, p)
	p.Blackhole(Both)
	c2.Write([]byte("stuck\n"))
	done := make(chan struct{})
	go func() { p.Close(); p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with a black-holed connection open")
	}

	_, err = Start("no-port")
	require.ErrorContains(t, err, `target "no-port"`)
}
