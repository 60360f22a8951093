// Package faultproxy is a TCP proxy for fault tests: it listens on 127.0.0.1, forwards
// every connection to a target, and on command delays (fixed, or with random jitter),
// black-holes or resets the traffic, each direction on its own.
//
// Black-holing holds bytes instead of forwarding them: the proxy keeps reading (up to
// about 8 MiB per connection and direction, then the sender's socket buffer fills), so
// the sender sees a peer that accepts and never answers, as with a network partition
// that drops packets, not one that refuses connections. New connections are accepted
// during a black hole and held likewise. Heal forwards what was held, in order, as TCP
// delivers what it retransmitted once a partition heals; Reset drops connections
// instead (RST both ways).
//
// A Kafka client connects to the brokers' advertised listeners, not to the bootstrap
// address it was given, so a proxy sits between a client and a broker only when the
// broker advertises the proxy's address (stack.KafkaOptions.Proxied does that). A Redis
// client connects where it is told: point it at Addr.
//
// A Proxy is safe for concurrent use.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Direction selects the traffic a fault applies to.
type Direction int

const (
	// Up is client to target (requests).
	Up Direction = 1 << iota
	// Down is target to client (responses).
	Down
	// Both directions.
	Both = Up | Down
)

func (d Direction) String() string {
	switch d {
	case Up:
		return "up"
	case Down:
		return "down"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// Proxy forwards connections from Addr to a target.
type Proxy struct {
	ln     net.Listener
	target atomic.Value // string

	mu     sync.Mutex
	dirs   [2]dirState // [0] up, [1] down
	conns  map[*conn]struct{}
	closed bool

	wg       sync.WaitGroup
	accepted atomic.Int64
	bytes    [2]atomic.Int64 // forwarded, per direction
}

type dirState struct {
	delay  time.Duration
	jitter time.Duration // each chunk is held delay plus a uniform random [0, jitter)
	hole   chan struct{} // non-nil while black-holed; closed by Heal
}

// Start listens on 127.0.0.1 at an ephemeral port and forwards to target (host:port).
func Start(target string) (*Proxy, error) { return Listen("127.0.0.1:0", target) }

// Listen listens on addr and forwards to target (host:port).
func Listen(addr, target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("faultproxy: target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen on %s: %w", addr, err)
	}
	p := &Proxy{ln: ln, conns: map[*conn]struct{}{}}
	p.target.Store(target)
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is where connections are forwarded.
func (p *Proxy) Target() string { return p.target.Load().(string) }

// SetTarget changes where new connections are forwarded; open ones keep theirs.
func (p *Proxy) SetTarget(target string) { p.target.Store(target) }

// Delay holds each chunk of dir's traffic for d before forwarding it (0 removes the
// delay). It adds latency without limiting throughput, and applies to bytes read after
// the call.
func (p *Proxy) Delay(dir Direction, d time.Duration) {
	p.set(dir, func(s *dirState) { s.delay = d })
}

// Jitter holds each chunk of dir's traffic for an extra random time in [0, max) on top
// of Delay (0 removes it). Chunks of one connection still arrive in order, as TCP
// delivers them; only the latency varies.
func (p *Proxy) Jitter(dir Direction, max time.Duration) {
	p.set(dir, func(s *dirState) { s.jitter = max })
}

// Blackhole stops forwarding dir's traffic, holding it, until Heal.
func (p *Proxy) Blackhole(dir Direction) {
	p.set(dir, func(s *dirState) {
		if s.hole == nil {
			s.hole = make(chan struct{})
		}
	})
}

// set applies f to the state of each direction in dir.
func (p *Proxy) set(dir Direction, f func(*dirState)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.dirs {
		if dir&(1<<i) != 0 {
			f(&p.dirs[i])
		}
	}
}

// Heal ends black holes, delays and jitter in both directions; held bytes are forwarded.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.healLocked()
}

// healLocked releases the black-holed pumps and clears every fault; p.mu is held.
func (p *Proxy) healLocked() {
	for i := range p.dirs {
		if p.dirs[i].hole != nil {
			close(p.dirs[i].hole)
		}
		p.dirs[i] = dirState{}
	}
}

// Reset aborts every open connection with a TCP reset on both sides, dropping what was
// held; it returns how many it reset. New connections are accepted as usual.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	return p.resetUnlock()
}

// resetUnlock resets the open connections; p.mu is held on entry and released.
func (p *Proxy) resetUnlock() int {
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.reset()
	}
	return len(conns)
}

// Stats reports connections accepted so far and bytes forwarded each way.
func (p *Proxy) Stats() (accepted, up, down int64) {
	return p.accepted.Load(), p.bytes[0].Load(), p.bytes[1].Load()
}

// Conns is the number of open connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops listening, closes every connection and waits for the proxy's goroutines.
// It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.healLocked() // black-holed pumps must see their sockets closed
	err := p.ln.Close()
	p.resetUnlock()
	p.wg.Wait()
	return err
}

// state returns dir i's current delay and black hole.
func (p *Proxy) state(i int) dirState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dirs[i]
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.accepted.Add(1)
		server, err := net.DialTimeout("tcp", p.Target(), 5*time.Second)
		if err != nil {
			// The target is down: refuse as it would, with a reset.
			if tc, ok := client.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			client.Close()
			continue
		}
		c := &conn{client: client.(*net.TCPConn), server: server.(*net.TCPConn), done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.reset()
			return
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() {
			var pumps sync.WaitGroup
			pumps.Go(func() { p.pump(c, 0, c.client, c.server) })
			pumps.Go(func() { p.pump(c, 1, c.server, c.client) })
			pumps.Wait()
			c.reset()
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
		})
	}
}

type conn struct {
	client, server *net.TCPConn
	once           sync.Once
	done           chan struct{}
}

// reset closes both sides with SO_LINGER 0, which sends RST instead of FIN.
func (c *conn) reset() {
	c.once.Do(func() {
		close(c.done)
		c.client.SetLinger(0)
		c.server.SetLinger(0)
		c.client.Close()
		c.server.Close()
	})
}

type chunk struct {
	b     []byte
	at    time.Time
	extra time.Duration // drawn once per chunk from the jitter in force when it was read
}

// pump forwards src to dst for direction i: a reader stamps each chunk, a writer
// forwards it once its delay passed and no black hole holds the direction.
func (p *Proxy) pump(c *conn, i int, src, dst *net.TCPConn) {
	q := make(chan chunk, 256) // up to 256 reads of 32 KiB held per direction
	var reader sync.WaitGroup
	// Every early return below follows c.reset, which closes src and so ends the reader.
	defer reader.Wait()
	reader.Go(func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				var extra time.Duration
				if j := p.state(i).jitter; j > 0 {
					extra = rand.N(j)
				}
				select {
				case q <- chunk{b[:n], time.Now(), extra}:
				case <-c.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	for ch := range q {
		for {
			st := p.state(i)
			if st.hole != nil {
				select {
				case <-st.hole:
					continue // healed (or closing): look again
				case <-c.done:
					return
				}
			}
			if wait := time.Until(ch.at.Add(st.delay + ch.extra)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-c.done:
					t.Stop()
					return
				}
				continue // the state may have changed while waiting
			}
			break
		}
		if _, err := dst.Write(ch.b); err != nil {
			c.reset()
			return
		}
		p.bytes[i].Add(int64(len(ch.b)))
	}
	// src ended: pass the half-close on, as TCP does.
	if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
		c.reset()
	}
}

var _ io.Closer = (*Proxy)(nil)
