package faultproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const KiB = 1 << 10

// result is what one end of a transfer read: how much, its SHA-256, and
// the error that ended the read (nil for EOF). A reset is reported once,
// to whichever call meets it first, so werr keeps the error of the writes
// beside it.
type result struct {
	n    int64
	sum  [32]byte
	err  error
	werr error
}

// reset reports whether the end saw a reset, reading or writing.
func (r result) reset() bool {
	return errors.Is(r.err, syscall.ECONNRESET) || errors.Is(r.werr, syscall.ECONNRESET) || errors.Is(r.werr, syscall.EPIPE)
}

func readAll(r io.Reader) result {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var res result
	res.n, res.err = n, err
	copy(res.sum[:], h.Sum(nil))
	return res
}

// isPrefix reports whether r read exactly the first r.n bytes of payload.
func (r result) isPrefix(payload []byte) bool {
	return r.n <= int64(len(payload)) && sha256.Sum256(payload[:r.n]) == r.sum
}

func payload(seed uint64, n int) []byte {
	b := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{byte(seed)})
	rng.Read(b)
	return b
}

// sink is the server behind the proxy: on each connection it sends down
// and reads everything the client sends.
type sink struct {
	ln      net.Listener
	down    []byte
	results chan result
	wg      sync.WaitGroup
}

func startSink(t *testing.T, down []byte) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln, down: down, results: make(chan result, 16)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				wrote := make(chan error, 1)
				go func() {
					_, err := c.Write(s.down)
					c.(*net.TCPConn).CloseWrite()
					wrote <- err
				}()
				r := readAll(c)
				r.werr = <-wrote
				s.results <- r
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

// transfer sends up through p and reads what comes down, running during
// (if any) on the proxied connection meanwhile.
func transfer(t *testing.T, p *Proxy, index int, up []byte, during func(*Conn)) (cli result, c *Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		// A reset can beat the end of our own connect.
		dialErr := err
		if !errors.Is(dialErr, syscall.ECONNRESET) {
			t.Fatal(dialErr)
		}
		if c, err = p.Conn(ctx, index); err != nil {
			t.Fatal(err)
		}
		<-c.Done()
		return result{err: dialErr, sum: sha256.Sum256(nil)}, c
	}
	defer conn.Close()
	wrote := make(chan error, 1)
	go func() {
		_, err := conn.Write(up)
		conn.(*net.TCPConn).CloseWrite()
		wrote <- err
	}()
	c, err = p.Conn(ctx, index)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if during != nil {
			during(c)
		}
	}()
	cli = readAll(conn)
	<-done
	cli.werr = <-wrote
	conn.Close()
	<-c.Done()
	return cli, c
}

// fakeClock hands out timers the test fires by hand.
type fakeClock struct {
	asked chan time.Duration
	fire  chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{asked: make(chan time.Duration, 4), fire: make(chan time.Time)}
}

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	f.asked <- d
	return f.fire
}

func TestFaults(t *testing.T) {
	const size = 256 * KiB
	up, down := payload(1, size), payload(2, size)

	type check func(t *testing.T, c *Conn, cli, srv result)
	full := func(t *testing.T, c *Conn, cli, srv result) {
		t.Helper()
		if cli.err != nil || cli.n != size || !cli.isPrefix(down) {
			t.Errorf("client read %d bytes (err %v), want all %d byte-exact", cli.n, cli.err, size)
		}
		if srv.err != nil || srv.n != size || !srv.isPrefix(up) {
			t.Errorf("server read %d bytes (err %v), want all %d byte-exact", srv.n, srv.err, size)
		}
		if c.Bytes(Up) != size || c.Bytes(Down) != size {
			t.Errorf("counted up %d down %d, want %d each", c.Bytes(Up), c.Bytes(Down), size)
		}
	}
	clock := newFakeClock()
	tests := []struct {
		name   string
		faults []Fault
		during func(t *testing.T, c *Conn)
		check  check
	}{
		{name: "none", check: full},
		{
			name:   "rst down at 100 KiB",
			faults: []Fault{{Dir: Down, At: 100 * KiB, Action: RST}},
			check: func(t *testing.T, c *Conn, cli, srv result) {
				if c.Bytes(Down) != 100*KiB {
					t.Errorf("forwarded %d bytes down, want %d", c.Bytes(Down), 100*KiB)
				}
				if !cli.isPrefix(down) || cli.n > 100*KiB || !cli.reset() {
					t.Errorf("client read %d bytes, err %v; want a prefix of at most 100 KiB and a reset", cli.n, cli.err)
				}
				if !srv.isPrefix(up) {
					t.Errorf("server read %d bytes that are not the upload's prefix", srv.n)
				}
			},
		},
		{
			name:   "fin down at 100 KiB",
			faults: []Fault{{Dir: Down, At: 100 * KiB, Action: FIN}},
			check: func(t *testing.T, c *Conn, cli, srv result) {
				if cli.err != nil || cli.n != 100*KiB || !cli.isPrefix(down) {
					t.Errorf("client read %d bytes, err %v; want exactly 100 KiB and EOF", cli.n, cli.err)
				}
				if srv.err != nil || !srv.isPrefix(up) {
					t.Errorf("server read %d bytes, err %v; want a prefix and EOF", srv.n, srv.err)
				}
			},
		},
		{
			name:   "rst up at 10 KiB",
			faults: []Fault{{Dir: Up, At: 10 * KiB, Action: RST}},
			check: func(t *testing.T, c *Conn, cli, srv result) {
				if c.Bytes(Up) != 10*KiB {
					t.Errorf("forwarded %d bytes up, want %d", c.Bytes(Up), 10*KiB)
				}
				if !srv.isPrefix(up) || srv.n > 10*KiB || !srv.reset() {
					t.Errorf("server read %d bytes, err %v; want a prefix of at most 10 KiB and a reset", srv.n, srv.err)
				}
				if !cli.isPrefix(down) {
					t.Errorf("client read %d bytes that are not the download's prefix", cli.n)
				}
			},
		},
		{
			name:   "fin up at 10 KiB",
			faults: []Fault{{Dir: Up, At: 10 * KiB, Action: FIN}},
			check: func(t *testing.T, c *Conn, cli, srv result) {
				if srv.err != nil || srv.n != 10*KiB || !srv.isPrefix(up) {
					t.Errorf("server read %d bytes, err %v; want exactly 10 KiB and EOF", srv.n, srv.err)
				}
				if cli.err != nil || !cli.isPrefix(down) {
					t.Errorf("client read %d bytes, err %v; want a prefix and EOF", cli.n, cli.err)
				}
			},
		},
		{
			name:   "stall down at 64 KiB until released",
			faults: []Fault{{Dir: Down, At: 64 * KiB, Action: Stall}},
			during: func(t *testing.T, c *Conn) {
				<-c.Stalled(Down)
				if got := c.Bytes(Down); got != 64*KiB {
					t.Errorf("stalled after %d bytes, want %d", got, 64*KiB)
				}
				c.Release()
			},
			check: full,
		},
		{
			name:   "stall up at 128 KiB for 2 s",
			faults: []Fault{{Dir: Up, At: 128 * KiB, Action: Stall, For: 2 * time.Second}},
			during: func(t *testing.T, c *Conn) {
				<-c.Stalled(Up)
				if d := <-clock.asked; d != 2*time.Second {
					t.Errorf("stall timer %v, want 2s", d)
				}
				if got := c.Bytes(Up); got != 128*KiB {
					t.Errorf("stalled after %d bytes, want %d", got, 128*KiB)
				}
				clock.fire <- time.Time{}
			},
			check: full,
		},
		{
			name:   "fragment down, 4 KiB from 1000",
			faults: []Fault{{Dir: Down, At: 1000, Action: Fragment, Len: 4 * KiB}},
			check: func(t *testing.T, c *Conn, cli, srv result) {
				full(t, c, cli, srv)
				if w := c.Writes(Down); w < 4*KiB+2 {
					t.Errorf("%d writes down, want 4096 single-byte writes and at least two more", w)
				}
			},
		},
		{
			name:   "fragment up, all of it",
			faults: []Fault{{Dir: Up, Action: Fragment}},
			check: func(t *testing.T, c *Conn, cli, srv result) {
				full(t, c, cli, srv)
				if w := c.Writes(Up); w != size {
					t.Errorf("%d writes up, want %d", w, size)
				}
			},
		},
		{
			name:   "kill with RST while stalled",
			faults: []Fault{{Dir: Down, At: 64 * KiB, Action: Stall}},
			during: func(t *testing.T, c *Conn) { <-c.Stalled(Down); c.Kill(RST) },
			check: func(t *testing.T, c *Conn, cli, srv result) {
				if !cli.isPrefix(down) || cli.n > 64*KiB || !cli.reset() {
					t.Errorf("client read %d bytes, err %v; want a prefix of at most 64 KiB and a reset", cli.n, cli.err)
				}
			},
		},
		{
			name:   "kill with FIN while stalled",
			faults: []Fault{{Dir: Down, At: 64 * KiB, Action: Stall}},
			during: func(t *testing.T, c *Conn) { <-c.Stalled(Down); c.Kill(FIN) },
			check: func(t *testing.T, c *Conn, cli, srv result) {
				if cli.err != nil || cli.n != 64*KiB || !cli.isPrefix(down) {
					t.Errorf("client read %d bytes, err %v; want exactly 64 KiB and EOF", cli.n, cli.err)
				}
				if srv.err != nil || !srv.isPrefix(up) {
					t.Errorf("server read %d bytes, err %v; want a prefix and EOF", srv.n, srv.err)
				}
			},
		},
		{
			name: "two faults in order: fragment then fin",
			faults: []Fault{
				{Dir: Down, At: 200 * KiB, Action: FIN},
				{Dir: Down, At: 10, Action: Fragment, Len: 100},
			},
			check: func(t *testing.T, c *Conn, cli, srv result) {
				if cli.err != nil || cli.n != 200*KiB || !cli.isPrefix(down) {
					t.Errorf("client read %d bytes, err %v; want exactly 200 KiB and EOF", cli.n, cli.err)
				}
				if w := c.Writes(Down); w < 102 {
					t.Errorf("%d writes down, want at least 102", w)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startSink(t, down)
			p, err := New(Options{Target: s.ln.Addr().String(), Script: Script{0: tc.faults}, After: clock.After})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			var during func(*Conn)
			if tc.during != nil {
				during = func(c *Conn) { tc.during(t, c) }
			}
			cli, c := transfer(t, p, 0, up, during)
			srv := <-s.results
			tc.check(t, c, cli, srv)
		})
	}
}

// TestScriptPerConnection: faults follow the accept order; connections
// without an entry pass untouched.
func TestScriptPerConnection(t *testing.T) {
	up, down := payload(3, 300*KiB), payload(4, 300*KiB)
	s := startSink(t, down)
	p, err := New(Options{Target: s.ln.Addr().String(), Script: Script{
		0: {{Dir: Down, At: 100 * KiB, Action: FIN}},
		2: {{Dir: Up, At: 1, Action: RST}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	want := []int64{100 * KiB, 300 * KiB}
	for i, n := range want {
		cli, _ := transfer(t, p, i, up, nil)
		<-s.results
		if cli.err != nil || cli.n != n || !cli.isPrefix(down) {
			t.Errorf("connection %d: client read %d bytes, err %v; want %d byte-exact", i, cli.n, cli.err, n)
		}
	}
	cli, c := transfer(t, p, 2, up, nil)
	srv := <-s.results
	if c.Bytes(Up) != 1 || srv.n > 1 || !srv.isPrefix(up) {
		t.Errorf("connection 2: forwarded %d, server read %d; want one byte at most", c.Bytes(Up), srv.n)
	}
	if !srv.reset() && !cli.reset() {
		t.Errorf("connection 2: no side saw a reset (client %v/%v, server %v/%v)", cli.err, cli.werr, srv.err, srv.werr)
	}
	if p.Accepted() != 3 {
		t.Errorf("accepted %d, want 3", p.Accepted())
	}
}

// TestStallNow stops one direction of a live echo and releases it.
func TestStallNow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	defer func() { ln.Close(); wg.Wait() }()
	p, err := New(Options{Target: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := payload(5, 2*KiB)
	echo := make([]byte, len(msg))
	conn.Write(msg[:KiB])
	if _, err := io.ReadFull(conn, echo[:KiB]); err != nil {
		t.Fatal(err)
	}
	c, err := p.Conn(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	c.Stall(Up)
	conn.Write(msg[KiB:])
	<-c.Stalled(Up)
	if got := c.Bytes(Up); got != KiB {
		t.Errorf("forwarded %d bytes up during the stall, want %d", got, KiB)
	}
	c.Release()
	if _, err := io.ReadFull(conn, echo[KiB:]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(echo, msg) {
		t.Error("echo differs from what was sent")
	}
	conn.(*net.TCPConn).CloseWrite()
	if r := readAll(conn); r.n != 0 || r.err != nil {
		t.Errorf("after the echo: %d bytes, err %v; want a clean EOF", r.n, r.err)
	}
}

// TestCloseResetsLiveConnections: Close with a stalled connection resets
// it and leaves no goroutine behind (TestMain's goleak).
func TestCloseResetsLiveConnections(t *testing.T) {
	down := payload(6, 256*KiB)
	s := startSink(t, down)
	p, err := New(Options{Target: s.ln.Addr().String(), Script: Script{0: {{Dir: Down, At: 10 * KiB, Action: Stall}}}})
	if err != nil {
		t.Fatal(err)
	}
	cli, _ := transfer(t, p, 0, nil, func(c *Conn) { <-c.Stalled(Down); p.Close() })
	<-s.results
	if !cli.reset() || cli.n > 10*KiB || !cli.isPrefix(down) {
		t.Errorf("client read %d bytes, err %v; want at most 10 KiB and a reset", cli.n, cli.err)
	}
	if _, err := p.Conn(t.Context(), 1); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Conn after Close: %v, want net.ErrClosed", err)
	}
}

func TestDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p, err := New(Options{Target: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	conn, err := net.Dial("tcp", p.Addr())
	if err == nil { // else the reset beat the end of our own connect
		defer conn.Close()
		_, werr := conn.Write([]byte("x"))
		r := readAll(conn)
		r.werr = werr
		if r.n != 0 || !r.reset() {
			t.Errorf("client read %d bytes, err %v, write err %v; want a reset", r.n, r.err, r.werr)
		}
	}
	c, err := p.Conn(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.DialErr() == nil {
		t.Error("no dial error for a closed port")
	}
}

func TestOptionsRejected(t *testing.T) {
	for _, o := range []Options{
		{Target: "192.0.2.1:80"},
		{Target: "example.org:80"},
		{Target: "no-port"},
		{Target: "127.0.0.1:1", Script: Script{0: {{Dir: 2, Action: RST}}}},
		{Target: "127.0.0.1:1", Script: Script{0: {{Action: 0}}}},
		{Target: "127.0.0.1:1", Script: Script{0: {{Action: RST, At: -1}}}},
	} {
		if p, err := New(o); err == nil {
			p.Close()
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	if _, err := New(Options{Target: "[2001:db8::1]:80"}); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("a non-loopback target: %v, want ErrNotLoopback", err)
	}
}

func TestFaultString(t *testing.T) {
	for _, tc := range []struct {
		f    Fault
		want string
	}{
		{Fault{Dir: Down, At: 102400, Action: RST}, "down RST@102400"},
		{Fault{Dir: Up, At: 5, Action: Stall, For: 2 * time.Second}, "up stall@5/2s"},
		{Fault{Dir: Up, Action: Fragment, Len: 100}, "up fragment@0+100"},
		{Fault{Dir: Down, At: 1, Action: FIN}, "down FIN@1"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("%#v: %q, want %q", tc.f, got, tc.want)
		}
	}
}
