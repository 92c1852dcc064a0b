// Package faultproxy is a TCP proxy for tests that breaks connections on
// purpose. It sits between a client and a server on loopback, forwards bytes
// in both directions, and applies faults scripted per connection (by accept
// order) and per direction at exact byte offsets:
//
//   - RST: reset both sides once At bytes went through (SO_LINGER 0).
//   - FIN: end both sides with a FIN once At bytes went through; whatever
//     either peer still sends is read and dropped, so neither sees a reset.
//   - Stall: stop forwarding (and reading, so the sender's window fills) at
//     At, for a duration or until Conn.Release.
//   - Fragment: from At on, write every byte with a write of its own
//     (TCP_NODELAY is set, so each becomes a segment of one byte).
//
// A test can also act on a connection (a "lane") while it runs: Conn.Kill
// cuts it now with RST or FIN, Conn.Stall stops one direction now. Byte and
// write counters per direction let a test assert where a fault struck.
//
// Offsets count bytes forwarded, so "RST at 100 KiB downstream" hands
// exactly 102,400 bytes to the client's socket and then resets it. As with a
// real reset, bytes still queued in the kernel may never reach the peer: a
// reset peer reads a prefix of at most At bytes. A FIN cut delivers exactly
// At bytes and then EOF.
//
// Goroutines: one accept loop per Proxy; per connection one goroutine that
// dials the target and then two pumps (up: client→server, down:
// server→client). Close stops the accept loop, cuts every live connection
// with RST and waits for all of them, so a test that closes its Proxy leaks
// nothing. Timers go through Options.After so tests drive stalls with a fake
// clock.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Dir is a direction of a proxied connection.
type Dir uint8

const (
	// Up is client to server: bytes read from the accepted connection.
	Up Dir = iota
	// Down is server to client: bytes read from the dialed target.
	Down
)

func (d Dir) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// Action is what a fault does.
type Action uint8

const (
	// RST resets both sides.
	RST Action = iota + 1
	// FIN ends both sides with a FIN and drops what they still send.
	FIN
	// Stall stops forwarding in the fault's direction.
	Stall
	// Fragment forwards in writes of one byte.
	Fragment
)

func (a Action) String() string {
	switch a {
	case RST:
		return "RST"
	case FIN:
		return "FIN"
	case Stall:
		return "stall"
	case Fragment:
		return "fragment"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Fault is one scripted fault of one connection.
type Fault struct {
	// Dir is the direction whose byte count triggers the fault (and, for
	// Stall and Fragment, the direction affected).
	Dir Dir
	// At is the number of bytes forwarded in Dir before the fault acts.
	At int64
	// Action is what happens at At.
	Action Action
	// For is how long a Stall lasts; 0 stalls until Conn.Release.
	For time.Duration
	// Len is how many bytes a Fragment sends one per write; 0 means all
	// the rest.
	Len int64
}

func (f Fault) String() string {
	s := fmt.Sprintf("%s %s@%d", f.Dir, f.Action, f.At)
	if f.Action == Stall && f.For > 0 {
		s += "/" + f.For.String()
	}
	if f.Action == Fragment && f.Len > 0 {
		s += fmt.Sprintf("+%d", f.Len)
	}
	return s
}

// Script maps a connection index (0 for the first accepted connection) to
// its faults. Connections without an entry are forwarded untouched.
type Script map[int][]Fault

// Options configure a Proxy.
type Options struct {
	// Target is the loopback address every accepted connection is
	// forwarded to.
	Target string
	// Script holds the faults per connection index.
	Script Script
	// After is the clock for timed stalls; nil means time.After.
	After func(time.Duration) <-chan time.Time
}

// ErrNotLoopback is returned when the listen or target address is not a
// loopback address: the proxy is for tests on one machine only.
var ErrNotLoopback = errors.New("faultproxy: loopback addresses only")

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	ln     net.Listener
	opts   Options
	done   chan struct{} // closed by Close
	closed sync.Once
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   []*Conn
	changed chan struct{} // closed and replaced when conns grows
}

// New listens on 127.0.0.1 (an ephemeral port) and forwards to
// opts.Target.
func New(opts Options) (*Proxy, error) {
	if err := checkLoopback(opts.Target); err != nil {
		return nil, err
	}
	for i, fs := range opts.Script {
		for _, f := range fs {
			if err := f.validate(); err != nil {
				return nil, fmt.Errorf("faultproxy: connection %d: %w", i, err)
			}
		}
	}
	if opts.After == nil {
		opts.After = time.After
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, opts: opts, done: make(chan struct{}), changed: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (f Fault) validate() error {
	switch {
	case f.Dir > Down:
		return fmt.Errorf("fault %v: bad direction", f)
	case f.Action < RST || f.Action > Fragment:
		return fmt.Errorf("fault %v: bad action", f)
	case f.At < 0 || f.Len < 0 || f.For < 0:
		return fmt.Errorf("fault %v: negative offset, length or duration", f)
	}
	return nil
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("faultproxy: target %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: %q", ErrNotLoopback, addr)
	}
	return nil
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting, resets every live connection and waits for all
// goroutines. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.closed.Do(func() {
		close(p.done)
		p.ln.Close()
	})
	p.wg.Wait()
	return nil
}

// Accepted is how many connections the proxy has accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Conn waits until connection i (in accept order) exists and returns it.
func (p *Proxy) Conn(ctx context.Context, i int) (*Conn, error) {
	for {
		p.mu.Lock()
		if i < len(p.conns) {
			c := p.conns[i]
			p.mu.Unlock()
			return c, nil
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.done:
			return nil, net.ErrClosed
		}
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed (Close) or a listener failure; either way no more
		}
		p.mu.Lock()
		conn := newConn(p, len(p.conns), c.(*net.TCPConn))
		p.conns = append(p.conns, conn)
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			conn.run()
		}()
	}
}
