package runner

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// relay is a test middlebox between client and server. It forwards both
// ways and lets a test record the client's bytes, flip a bit at an offset
// of the client→server stream, or cut every connection.
type relay struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	flipAt   int64 // c2s offset to flip (per connection), -1 = off
	flipOnce bool  // flip on one connection only, then off
	// dropReplies is how many of the next connections never pass on a
	// byte from the server: the relay cuts both sides when the server's
	// first bytes arrive (a cut in the middle of a handshake).
	dropReplies int
	recorded    [][]byte
	conns       []net.Conn
	wg          sync.WaitGroup
	// blackhole, while set, makes the relay swallow traffic both ways
	// (the connections stay up): a network that silently stopped.
	blackhole atomic.Bool
	// down, while set, makes the relay close each new connection at once
	// (a server that is not there).
	down atomic.Bool
	// c2s and s2c count bytes relayed each way on all connections.
	c2s, s2c atomic.Int64
	// delay holds every chunk this long before it is passed on, each way
	// (a link's latency; chunks keep their order and do not wait for each
	// other).
	delay time.Duration
}

func startRelay(t testing.TB, target string) *relay { return startDelayRelay(t, target, 0) }

func startDelayRelay(t testing.TB, target string, delay time.Duration) *relay {
	r := &relay{ln: listenLocal(t), target: target, flipAt: -1, delay: delay}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := r.ln.Accept()
			if err != nil {
				return
			}
			if r.down.Load() {
				_ = c.Close()
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			r.mu.Lock()
			if r.down.Load() {
				// Went down while this one was being connected: a cut
				// (which holds the lock) must not miss it.
				r.mu.Unlock()
				_ = c.Close()
				_ = s.Close()
				continue
			}
			idx := len(r.recorded)
			r.recorded = append(r.recorded, nil)
			r.conns = append(r.conns, c, s)
			drop := r.dropReplies > 0
			if drop {
				r.dropReplies--
			}
			r.mu.Unlock()
			r.wg.Add(2)
			cw, sw := r.delayed(c), r.delayed(s)
			go func() {
				defer r.wg.Done()
				r.pipeC2S(idx, c, sw)
			}()
			go func() {
				defer r.wg.Done()
				if drop {
					var b [1]byte
					_, _ = s.Read(b[:])
					_ = c.Close()
					_ = s.Close()
					return
				}
				r.pipeS2C(s, cw)
			}()
		}
	}()
	return r
}

// halfCloser is a connection's write side: TCP, or a delayed one.
type halfCloser interface {
	Write([]byte) (int, error)
	CloseWrite() error
}

// delayedConn passes writes on to its connection after the relay's delay.
type delayedConn struct {
	q chan delayedChunk
	d time.Duration
}

type delayedChunk struct {
	at time.Time
	b  []byte // nil: CloseWrite
}

func (r *relay) delayed(c net.Conn) halfCloser {
	if r.delay <= 0 {
		return c.(*net.TCPConn)
	}
	dc := &delayedConn{q: make(chan delayedChunk, 4096), d: r.delay}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		failed := false // after a write error the queue is only drained
		for ch := range dc.q {
			if failed {
				continue
			}
			time.Sleep(time.Until(ch.at))
			if ch.b == nil {
				_ = c.(*net.TCPConn).CloseWrite()
			} else if _, err := c.Write(ch.b); err != nil {
				failed = true
			}
		}
	}()
	return dc
}

func (dc *delayedConn) Write(b []byte) (int, error) {
	dc.q <- delayedChunk{time.Now().Add(dc.d), append([]byte{}, b...)}
	return len(b), nil
}

func (dc *delayedConn) CloseWrite() error {
	dc.q <- delayedChunk{at: time.Now().Add(dc.d)}
	close(dc.q)
	return nil
}

func (r *relay) pipeC2S(idx int, c net.Conn, s halfCloser) {
	buf := make([]byte, 32*1024)
	var off int64
	for {
		n, err := c.Read(buf)
		if n > 0 {
			r.mu.Lock()
			if len(r.recorded[idx]) < 1<<20 {
				r.recorded[idx] = append(r.recorded[idx], buf[:n]...)
			}
			if r.flipAt >= off && r.flipAt < off+int64(n) {
				buf[r.flipAt-off] ^= 0x01
				if r.flipOnce {
					r.flipAt = -1
				}
			}
			r.mu.Unlock()
			off += int64(n)
			r.c2s.Add(int64(n))
			if r.blackhole.Load() {
				continue
			}
			if _, werr := s.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = s.CloseWrite()
			return
		}
	}
}

func (r *relay) pipeS2C(s net.Conn, c halfCloser) {
	buf := make([]byte, 32*1024)
	for {
		n, err := s.Read(buf)
		r.s2c.Add(int64(n))
		if n > 0 && !r.blackhole.Load() {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = c.CloseWrite()
			return
		}
	}
}

func (r *relay) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

// first returns the bytes the client sent on connection i so far.
func (r *relay) first(i int) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.recorded[i]...)
}

func (r *relay) setFlip(off int64) {
	r.mu.Lock()
	r.flipAt = off
	r.mu.Unlock()
}

// dropReply makes the next n connections cut when the server answers.
func (r *relay) dropReply(n int) {
	r.mu.Lock()
	r.dropReplies = n
	r.mu.Unlock()
}

// conns is how many connections the relay has accepted.
func (r *relay) accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.recorded)
}

// cut closes every relayed connection abruptly (no CLOSE record).
func (r *relay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		_ = c.Close()
	}
	r.conns = nil
}

func (r *relay) close() {
	_ = r.ln.Close()
	r.cut()
	r.wg.Wait()
}
