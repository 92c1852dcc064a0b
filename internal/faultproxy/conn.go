package faultproxy

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// pumpBufSize is the most a pump reads (and forwards) at once.
const pumpBufSize = 32 << 10

// Conn is one proxied connection. Its methods may be called from any
// goroutine.
type Conn struct {
	// Index is the connection's place in accept order, the key of its
	// faults in the Script.
	Index int

	p      *Proxy
	client *net.TCPConn
	server *net.TCPConn // nil until dialed; set before the pumps start
	faults [2][]Fault   // per direction, sorted by At

	bytes  [2]atomic.Int64
	writes [2]atomic.Int64

	mu      sync.Mutex
	paused  [2]bool          // Conn.Stall asked this direction to stop
	release chan struct{}    // closed and replaced by Release
	stalled [2]chan struct{} // closed while the direction is stalled

	cutOnce sync.Once
	cutHow  atomic.Uint32 // the Action of the cut, 0 before; stored under mu
	cut     chan struct{} // closed by the first cut
	done    chan struct{} // closed when both sockets are closed
	dialErr error         // set before done is closed
}

func newConn(p *Proxy, i int, client *net.TCPConn) *Conn {
	c := &Conn{
		Index:   i,
		p:       p,
		client:  client,
		release: make(chan struct{}),
		cut:     make(chan struct{}),
		done:    make(chan struct{}),
	}
	for d := range c.stalled {
		c.stalled[d] = make(chan struct{})
	}
	for _, f := range p.opts.Script[i] {
		c.faults[f.Dir] = append(c.faults[f.Dir], f)
	}
	for d := range c.faults {
		slices.SortStableFunc(c.faults[d], func(a, b Fault) int { return int(a.At - b.At) })
	}
	return c
}

// Bytes is how many bytes went through in direction d so far.
func (c *Conn) Bytes(d Dir) int64 { return c.bytes[d].Load() }

// Writes is how many writes carried those bytes (with Fragment, one per
// byte).
func (c *Conn) Writes(d Dir) int64 { return c.writes[d].Load() }

// Done is closed when the connection is over: both sockets closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Cut is closed when the connection was cut (a scripted RST or FIN, Kill,
// a reset from either peer, or Close).
func (c *Conn) Cut() <-chan struct{} { return c.cut }

// DialErr is the error dialing the target, once Done is closed.
func (c *Conn) DialErr() error {
	<-c.done
	return c.dialErr
}

// Stalled returns a channel that is closed while direction d is stalled:
// at once if it is stalled now, else when its next stall begins.
func (c *Conn) Stalled(d Dir) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stalled[d]
}

// Stall stops forwarding in direction d now (before the next chunk it
// reads) until Release.
func (c *Conn) Stall(d Dir) {
	c.mu.Lock()
	c.paused[d] = true
	c.mu.Unlock()
}

// Release ends every stall under way (timed or not) and every Stall. A
// scripted stall that begins later waits for the next Release, so a test
// waits on Stalled before releasing.
func (c *Conn) Release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = [2]bool{}
	close(c.release)
	c.release = make(chan struct{})
}

// Kill cuts the connection now with RST or FIN (any other action is taken
// as RST).
func (c *Conn) Kill(how Action) {
	if how != FIN {
		how = RST
	}
	c.doCut(how)
}

func (c *Conn) doCut(how Action) {
	c.cutOnce.Do(func() {
		c.mu.Lock() // against run setting c.server
		defer c.mu.Unlock()
		c.cutHow.Store(uint32(how))
		close(c.cut)
		socks := []*net.TCPConn{c.client}
		if c.server != nil {
			socks = append(socks, c.server)
		}
		for _, s := range socks {
			if how == RST {
				s.SetLinger(0) // close sends RST and drops the send queue
				s.Close()
				continue
			}
			// Wake a pump blocked writing to a peer that does not read,
			// then send FIN after what is already queued. The pumps keep
			// reading (and dropping) so closing later sends no RST.
			s.SetWriteDeadline(time.Unix(1, 0))
			s.CloseWrite()
		}
	})
}

func (c *Conn) cutAction() Action { return Action(c.cutHow.Load()) }

func (c *Conn) run() {
	defer close(c.done)
	ctx, cancel := context.WithCancel(context.Background())
	dialed := make(chan struct{})
	go func() { // Close aborts a dial under way
		select {
		case <-c.p.done:
			cancel()
		case <-dialed:
		}
	}()
	var d net.Dialer
	sc, err := d.DialContext(ctx, "tcp", c.p.opts.Target)
	close(dialed)
	cancel()
	if err != nil {
		c.dialErr = err
		c.doCut(RST)
		return
	}
	c.mu.Lock()
	c.server = sc.(*net.TCPConn)
	killed := c.cutHow.Load() != 0
	c.mu.Unlock()
	if killed { // cut while dialing: the target gets a reset too
		c.server.SetLinger(0)
		c.server.Close()
		c.client.Close()
		return
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.pump(Up, c.client, c.server) }()
	go func() { defer wg.Done(); c.pump(Down, c.server, c.client) }()
	both := make(chan struct{})
	go func() { wg.Wait(); close(both) }()
	select {
	case <-both:
	case <-c.p.done:
		c.doCut(RST)
		<-both
	}
	c.client.Close()
	c.server.Close()
}

// pump forwards src to dst in direction d, applying d's faults.
func (c *Conn) pump(d Dir, src, dst *net.TCPConn) {
	buf := make([]byte, pumpBufSize)
	faults := c.faults[d]
	var fwd int64
	fragEnd := int64(-1) // Fragment applies while fwd < fragEnd
	for {
		for len(faults) > 0 && faults[0].At <= fwd {
			f := faults[0]
			faults = faults[1:]
			switch f.Action {
			case RST, FIN:
				c.doCut(f.Action)
			case Stall:
				c.stallFor(d, f.For)
			case Fragment:
				fragEnd = math.MaxInt64
				if f.Len > 0 {
					fragEnd = fwd + f.Len
				}
			}
		}
		switch c.cutAction() {
		case RST:
			return
		case FIN:
			io.Copy(io.Discard, src)
			return
		}
		limit := int64(len(buf))
		if len(faults) > 0 {
			limit = min(limit, faults[0].At-fwd)
		}
		if fwd < fragEnd {
			limit = min(limit, fragEnd-fwd)
		}
		n, err := src.Read(buf[:limit])
		if n > 0 {
			c.waitPaused(d)
			if c.cutAction() != 0 {
				continue // the top of the loop drops or leaves
			}
			if werr := c.forward(d, dst, buf[:n], fwd < fragEnd); werr != nil {
				c.doCut(RST) // dst is gone: the other side learns it as a reset
				continue
			}
			fwd += int64(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) && c.cutAction() == 0 {
				dst.CloseWrite()
				return
			}
			c.doCut(RST) // a reset (or a cut) from src: pass it on
			return
		}
	}
}

// forward writes b to dst, one byte per write when frag is set.
func (c *Conn) forward(d Dir, dst *net.TCPConn, b []byte, frag bool) error {
	step := len(b)
	if frag {
		step = 1
	}
	for len(b) > 0 {
		n, err := dst.Write(b[:step])
		c.bytes[d].Add(int64(n))
		c.writes[d].Add(1)
		if err != nil {
			return err
		}
		b = b[step:]
	}
	return nil
}

// stallFor stops direction d for dur (0: until Release), or until the
// connection is cut or the proxy closed.
func (c *Conn) stallFor(d Dir, dur time.Duration) {
	rel := c.beginStall(d)
	defer c.endStall(d)
	var timer <-chan time.Time
	if dur > 0 {
		timer = c.p.opts.After(dur)
	}
	select {
	case <-rel:
	case <-timer:
	case <-c.cut:
	case <-c.p.done:
		c.doCut(RST) // now, so that the pump forwards nothing more
	}
}

// waitPaused blocks while Stall(d) is in force.
func (c *Conn) waitPaused(d Dir) {
	c.mu.Lock()
	paused := c.paused[d]
	c.mu.Unlock()
	if !paused {
		return
	}
	rel := c.beginStall(d)
	defer c.endStall(d)
	select {
	case <-rel:
	case <-c.cut:
	case <-c.p.done:
		c.doCut(RST)
	}
}

func (c *Conn) beginStall(d Dir) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.stalled[d])
	return c.release
}

func (c *Conn) endStall(d Dir) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stalled[d] = make(chan struct{})
}
