package stages

import (
	"errors"
	"net"
	"sync"
	"time"

	v1 "usocks/wire/v1"
)

// StripedConn is the v1 multi_tcp backend: one byte stream striped over N
// TCP connections ("lanes") in fixed-size blocks, round robin (wire/v1
// multitcp.go; spec §5.2). It is a net.Conn, so the backend reader and
// writer stages use it unchanged. Read is called by the reader stage only,
// Write by the writer stage only.
type StripedConn struct {
	lanes []net.Conn
	st    *v1.Striper
	re    *v1.Reassembler
	once  sync.Once
}

// NewStripedConn joins lanes (in the order the client opened them).
func NewStripedConn(lanes []net.Conn, blocksize int) (*StripedConn, error) {
	st, err := v1.NewStriper(len(lanes), blocksize)
	if err != nil {
		return nil, err
	}
	re, err := v1.NewReassembler(len(lanes), blocksize)
	if err != nil {
		return nil, err
	}
	return &StripedConn{lanes: lanes, st: st, re: re}, nil
}

// Read reads from the lane whose turn it is; EOF there ends the backend.
func (c *StripedConn) Read(p []byte) (int, error) {
	lane, n := c.re.Want()
	n, err := c.lanes[lane].Read(p[:min(n, len(p))])
	if n > 0 {
		if aerr := c.re.Advance(n); aerr != nil {
			return n, aerr
		}
	}
	return n, err
}

// Write stripes p over the lanes in stream order. Writes block only on a
// full lane, which the peer drains in the same order: no deadlock.
func (c *StripedConn) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		lane, take := c.st.Next(len(p) - done)
		if _, err := c.lanes[lane].Write(p[done : done+take]); err != nil {
			return done, err
		}
		done += take
	}
	return done, nil
}

// CloseWrite half-closes every lane.
func (c *StripedConn) CloseWrite() error {
	var errs []error
	for _, l := range c.lanes {
		errs = append(errs, CloseWrite(l))
	}
	return errors.Join(errs...)
}

// Close closes every lane.
func (c *StripedConn) Close() error {
	var errs []error
	c.once.Do(func() {
		for _, l := range c.lanes {
			errs = append(errs, l.Close())
		}
	})
	return errors.Join(errs...)
}

// LocalAddr is lane 0's.
func (c *StripedConn) LocalAddr() net.Addr { return c.lanes[0].LocalAddr() }

// RemoteAddr is lane 0's.
func (c *StripedConn) RemoteAddr() net.Addr { return c.lanes[0].RemoteAddr() }

// SetDeadline sets the deadline on every lane.
func (c *StripedConn) SetDeadline(t time.Time) error {
	for _, l := range c.lanes {
		_ = l.SetDeadline(t)
	}
	return nil
}

// SetReadDeadline sets the read deadline on every lane.
func (c *StripedConn) SetReadDeadline(t time.Time) error {
	for _, l := range c.lanes {
		_ = l.SetReadDeadline(t)
	}
	return nil
}

// SetWriteDeadline sets the write deadline on every lane.
func (c *StripedConn) SetWriteDeadline(t time.Time) error {
	for _, l := range c.lanes {
		_ = l.SetWriteDeadline(t)
	}
	return nil
}

// LaneGrouper collects a v1 server's accepted connections into multi_tcp
// backends: connections from one client IP address, in accept order, until
// there are `number` of them (the original's rule; it has no other
// identification). Incomplete groups expire after Timeout instead of
// waiting forever as in the original.
type LaneGrouper struct {
	Number  int
	Timeout time.Duration

	mu     sync.Mutex
	groups map[string]*laneGroup
}

type laneGroup struct {
	conns []net.Conn
	timer *time.Timer
}

// Add files c. When it completes a group it returns the group's lanes in
// accept order; otherwise nil.
func (g *LaneGrouper) Add(c net.Conn) []net.Conn {
	host := c.RemoteAddr().String()
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		host = ta.IP.String()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.groups == nil {
		g.groups = make(map[string]*laneGroup)
	}
	grp := g.groups[host]
	if grp == nil {
		grp = &laneGroup{}
		g.groups[host] = grp
		grp.timer = time.AfterFunc(g.Timeout, func() { g.expire(host, grp) })
	}
	grp.conns = append(grp.conns, c)
	if len(grp.conns) < g.Number {
		return nil
	}
	grp.timer.Stop()
	delete(g.groups, host)
	return grp.conns
}

func (g *LaneGrouper) expire(host string, grp *laneGroup) {
	g.mu.Lock()
	if g.groups[host] == grp {
		delete(g.groups, host)
	} else {
		grp = nil
	}
	g.mu.Unlock()
	if grp != nil {
		for _, c := range grp.conns {
			_ = c.Close()
		}
	}
}

// CloseAll drops every incomplete group (server shutdown).
func (g *LaneGrouper) CloseAll() {
	g.mu.Lock()
	groups := g.groups
	g.groups = nil
	g.mu.Unlock()
	for _, grp := range groups {
		grp.timer.Stop()
		for _, c := range grp.conns {
			_ = c.Close()
		}
	}
}
