package runner

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"usocks/wire"
	v1 "usocks/wire/v1"
)

// Protocol v1 end to end: our v1 client against our v1 server, over both
// v1 backends, every byte checked.

func testV1Streams(t *testing.T, backend string) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), protocol: "v1", backend: backend})
	tn.waitSession()
	streams, size := 50, 1<<20
	if testing.Short() {
		streams, size = 10, 128<<10
	}
	echoMany(t, tn, streams, size)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// One write larger than a v1 record's 65,535-byte limit.
	if err := echoThrough(ctx, tn, 200_000, 99); err != nil {
		t.Fatalf("large write: %v", err)
	}
	if s := tn.srv.Sessions.Load(); s != 1 {
		t.Errorf("sessions = %d, want 1", s)
	}
	var warned bool
	for _, e := range tn.hook.AllEntries() {
		if strings.Contains(e.Message, "protocol v1 is the weak legacy protocol") {
			warned = true
		}
	}
	if !warned {
		t.Error("no warning that v1 is weak")
	}
}

func TestV1PlainTCP(t *testing.T) { testV1Streams(t, "plain_tcp") }
func TestV1MultiTCP(t *testing.T) { testV1Streams(t, "multi_tcp") }

func TestV1RefusedTargetResetsStream(t *testing.T) {
	ln := listenLocal(t)
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	tn := startTunnel(t, tunnelOpts{targetPort: port, protocol: "v1"})
	tn.waitSession()
	tn.expectReset("refused target over v1")
	if f := tn.srv.Failed.Load(); f != 0 {
		t.Fatalf("a refused target ended %d tunnels", f)
	}
}

func TestV1GracefulClose(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), protocol: "v1"})
	tn.waitSession()
	if err := echoThrough(context.Background(), tn, 5000, 1); err != nil {
		t.Fatal(err)
	}
	tn.cancel()
	<-tn.done
	if tn.srv.Clean.Load() != 1 {
		t.Fatalf("clean=%d failed=%d: the v1 close record must end the session cleanly", tn.srv.Clean.Load(), tn.srv.Failed.Load())
	}
}

// A v1 client at a v2 server gets the invalid-input reaction; a v2 client
// at a v1 server fails its handshake. Neither opens a stream.
func TestV1AndV2DoNotMix(t *testing.T) {
	tg := startTarget(t)
	v2srv := startTunnel(t, tunnelOpts{targetPort: tg.port(), noClient: true})
	logger, _ := testLogger(t)
	cln := listenLocal(t)
	ccfg := &ClientConfig{Common: Common{Key: "any v1 key at all", Protocol: "v1",
		Backend: BackendConfig{Server: "127.0.0.1", Port: v2srv.srv.Addr().(*net.TCPAddr).Port}},
		Address: "127.0.0.1", Port: cln.Addr().(*net.TCPAddr).Port}
	cli, err := NewClient(ccfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	cli.UseListener(cln)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = cli.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	// A v1 client sends only once an app sends data.
	c, err := net.Dial("tcp", cln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("E hello"))
	waitFor(t, "v2 server to reject v1 bytes", 10*time.Second, func() bool { return v2srv.srv.Rejected.Load() >= 1 })
	if v2srv.srv.Sessions.Load() != 0 || tg.accepted.Load() != 0 {
		t.Fatal("v1 bytes opened a session or stream at a v2 server")
	}
}

// TestV1ServerErrorBehaviour: the original's error rules. A bad first
// packet (garbage, or a v2 client's first flight) gets no reply at all; a
// bad packet after a good one gets a reset record.
func TestV1ServerErrorBehaviour(t *testing.T) {
	tg := startTarget(t)
	const key = "v1 error test key"
	unread := &unreadAtClose{}
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), protocol: "v1", noClient: true, key: key, serverListener: unread.wrap})
	garbage := make([]byte, 64)
	_, _ = rand.Read(garbage)
	var psk wire.PSK
	h := wire.ClientHello{Time: uint64(time.Now().Unix()), Cipher: wire.CipherAES256GCM}
	v2flight := wire.AppendClientHello(nil, &psk, &h)
	for name, b := range map[string][]byte{"garbage": garbage, "v2 first flight": v2flight} {
		r, _ := probe(tn.serverAddr(), b, 5*time.Second)
		if r.bytesBack != 0 || r.how != "FIN" {
			t.Errorf("%s at a v1 server: %d bytes back, %s; want nothing and FIN", name, r.bytesBack, r.how)
		}
	}
	// One good packet, then one whose header is damaged.
	k := v1.DeriveKey(key)
	s, err := v1.NewRandomSealer(k, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := v1.AppendMessage(nil, v1.Message{Flags: v1.SYN | v1.DAT, ID: 1, Payload: []byte{modeSilent, 'a'}})
	stream := s.AppendMessage(s.Sync(), good)
	bad := s.AppendMessage(nil, v1.AppendMessage(nil, v1.Message{Flags: v1.DAT, ID: 1, Payload: []byte("bbbb")}))
	bad[3] ^= 0x40 // lands in the next block's plaintext: header or digest breaks
	c, err := net.Dial("tcp", tn.serverAddr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(append(stream, bad...)); err != nil {
		t.Fatal(err)
	}
	// Keep sending after the bad packet, more than the server's session
	// buffers, and read only once the server is done: it ends the session
	// with input unread, which must not turn into an RST that destroys the
	// reset record (the server shuts down its write side and lingers).
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		if _, err := c.Write(make([]byte, 2<<20)); err == nil {
			_ = c.(*net.TCPConn).CloseWrite()
		}
	}()
	defer func() { _ = c.Close(); <-sent }()
	waitFor(t, "the server to end the session", 10*time.Second, func() bool {
		n := tn.srv.Sessions.Load() // the two probes' and this one
		return n == 3 && tn.srv.Failed.Load()+tn.srv.Clean.Load() == n
	})
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply, err := io.ReadAll(c)
	if n := unread.n.Load(); n != 0 {
		t.Errorf("the server closed %d connections with input unread (the kernel sends RST)", n)
	}
	if err != nil {
		t.Fatalf("reading the server's reply to a damaged packet (%d bytes): %v; want the reset record and FIN", len(reply), err)
	}
	o := v1.NewOpener(k)
	o.Feed(reply)
	for {
		_, err := o.Next()
		if errors.Is(err, v1.ErrRemoteReset) {
			break
		}
		if err != nil {
			t.Fatalf("server's reply to a damaged packet (%d bytes): %v; want a reset record", len(reply), err)
		}
	}
}

// unreadAtClose wraps a listener's connections and counts those closed
// while input was still unread: the kernel answers such a close with RST,
// which destroys what is still in flight towards the peer.
type unreadAtClose struct{ n atomic.Int64 }

func (u *unreadAtClose) wrap(ln net.Listener) net.Listener { return &unreadListener{ln, u} }

type unreadListener struct {
	net.Listener
	u *unreadAtClose
}

func (l *unreadListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &unreadConn{TCPConn: c.(*net.TCPConn), u: l.u}, nil
}

type unreadConn struct {
	*net.TCPConn
	u    *unreadAtClose
	once sync.Once
}

func (c *unreadConn) Close() error {
	c.once.Do(func() {
		rc, err := c.SyscallConn()
		if err != nil {
			return
		}
		var n int
		_ = rc.Read(func(fd uintptr) bool {
			var b [1]byte
			n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return true
		})
		if n > 0 {
			c.u.n.Add(1)
		}
	})
	return c.TCPConn.Close()
}

// TestV1OriginalEndsAreClean: the original v1 ends a connection with its
// close record and then closes its socket at once, or with EOF and no
// close record at all. Both are normal v1 ends: our server must count them
// as clean, not as failures or insecure closes.
func TestV1OriginalEndsAreClean(t *testing.T) {
	tg := startTarget(t)
	const key = "v1 close test key"
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), protocol: "v1", noClient: true, key: key})
	k := v1.DeriveKey(key)
	for i, withClose := range []bool{true, false} {
		s, err := v1.NewRandomSealer(k, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		msg := v1.AppendMessage(nil, v1.Message{Flags: v1.SYN | v1.DAT, ID: 1, Payload: []byte{modeSilent, 'a'}})
		b := s.AppendMessage(s.Sync(), msg)
		if withClose {
			b = s.AppendClose(b, [4]byte{1, 2, 3, 4})
		}
		c, err := net.Dial("tcp", tn.serverAddr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		_ = c.Close() // at once, as the original does
		waitFor(t, "the server to end the session", 10*time.Second, func() bool {
			return tn.srv.Failed.Load()+tn.srv.Clean.Load() == int64(i+1)
		})
		if f := tn.srv.Failed.Load(); f != 0 {
			t.Fatalf("close record %v: the server counted %d failed sessions, want a clean end", withClose, f)
		}
	}
}
