package runner

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"

	"usocks/stages"
	"usocks/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		// A payload buffer released twice is shared by two frames later:
		// data corruption waiting to happen, even if no test saw it.
		if n := stages.DoubleReleases.Load(); n > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: %d payload buffers released twice (stages.DoubleReleases)\n", n)
			code = 1
		}
		os.Exit(code)
	}))
}

// Target modes: the first byte an app sends through the tunnel tells the
// test target what to do.
const (
	modeEcho   = 'E' // echo everything, half-close after EOF
	modeSource = 'S' // then u64 n: write n pattern bytes, then close
	modeHash   = 'H' // read to EOF, then answer with the SHA-256 of it
	modeSilent = 'Q' // read and discard to EOF, never write
	modeHold   = 'W' // read to EOF, then neither write nor close
)

// target is the test's target server behind the redirect frontend.
type target struct {
	ln       net.Listener
	wg       sync.WaitGroup
	accepted atomic.Int64
	sent     atomic.Int64  // bytes written in modeSource
	hold     chan struct{} // closed when the test ends
}

func startTarget(t testing.TB) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveTarget(t, ln)
}

// serveTarget runs the test target on ln until the test ends.
func serveTarget(t testing.TB, ln net.Listener) *target {
	tg := &target{ln: ln, hold: make(chan struct{})}
	tg.wg.Add(1)
	go func() {
		defer tg.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.accepted.Add(1)
			tg.wg.Add(1)
			go func() {
				defer tg.wg.Done()
				defer c.Close()
				tg.serve(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		close(tg.hold)
		tg.wg.Wait()
	})
	return tg
}

func (tg *target) serve(c *net.TCPConn) {
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case modeEcho:
		_, _ = io.Copy(c, c)
		_ = c.CloseWrite()
	case modeSource:
		var nb [8]byte
		if _, err := io.ReadFull(c, nb[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint64(nb[:])
		buf := make([]byte, 64*1024)
		Pattern(buf, 7)
		for n > 0 {
			k := min(n, uint64(len(buf)))
			if _, err := c.Write(buf[:k]); err != nil {
				return
			}
			tg.sent.Add(int64(k))
			n -= k
		}
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	case modeHash:
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		// The app already half-closed; we still answer.
		time.Sleep(50 * time.Millisecond)
		_, _ = c.Write(h.Sum(nil))
		_ = c.CloseWrite()
	case modeSilent:
		_, _ = io.Copy(io.Discard, c)
	case modeHold:
		_, _ = io.Copy(io.Discard, c)
		<-tg.hold
	}
}

func (tg *target) port() int { return tg.ln.Addr().(*net.TCPAddr).Port }

// tunnel is a client and server on loopback, optionally with a relay
// between them.
type tunnel struct {
	t      testing.TB
	key    string
	srv    *Server
	cli    *Client
	relay  *relay
	cancel context.CancelFunc
	done   chan struct{}
	hook   *test.Hook
	srvCfg *ServerConfig
}

type tunnelOpts struct {
	targetPort int
	clientKey  string // default: same as server
	relay      bool
	probe      time.Duration
	maxStreams int
	maxPending int
	// serverListener, if set, wraps the server's listener.
	serverListener func(net.Listener) net.Listener
	// relayDown starts the relay down (see relay.down).
	relayDown bool
	// sessionWait is the client's session_wait; backoff, if set, its
	// reconnect policy.
	sessionWait time.Duration
	backoff     *Backoff
	// clientNow, if set, is the client's clock.
	clientNow  func() time.Time
	noClient   bool
	protocol   string // "" (v2) or "v1"
	halfClosed time.Duration
	keepalive  time.Duration
	defense    string // both sides' `defense` ("": the defaults)
	cliDefense string // the client's, if it differs
	rekeyAfter uint64
	prefix     string
	rotate     time.Duration
	rotateB    int64  // the client's rotate_bytes
	key        string // default: a fresh v2 key, or a v1 passphrase
	backend    string // "" (plain_tcp), "multi_tcp", "tls" or "ws"
	// path is the WebSocket path (ws, or wss with backend tls); via, if
	// set, returns the address the client dials instead of the server's
	// (a reverse proxy in front of it).
	path string
	via  func(serverAddr string) string
	// listen is the client's listen.type (client-side proxy).
	listen string
	// delay, with relay, holds every chunk this long each way.
	delay time.Duration
	// frontend, if set, replaces the redirect to targetPort.
	frontend *FrontendConfig
	// capture settings of each end
	clientCapture, serverCapture     string
	clientPlaintext, serverPlaintext bool
	// metrics serves both sides' metrics on loopback ports of their own.
	metrics bool
	// limits are the server's limits (zero: the defaults).
	limits Limits
	// resume is both sides' resume_timeout. The default here is off
	// (-1s), so that the tests of a session's end test exactly that;
	// resume_e2e_test.go turns it on.
	resume       time.Duration
	srvResume    time.Duration // the server's, if it differs
	srvClock     clock         // the server's resumption timers (nil: the real clock)
	cliClock     clock         // the client's resume window (nil: the real clock)
	resumeBuffer int           // KiB (0: default)
	// srvKeepalive is the server's keepalive (0: the default).
	srvKeepalive time.Duration
}

func testLogger(t testing.TB) (*logrus.Logger, *test.Hook) {
	l, hook := test.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	if path := os.Getenv("USOCKS_TEST_LOG"); path != "" {
		// Debugging aid: append every log line of the run to a file.
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			l.SetOutput(f)
			t.Cleanup(func() { _ = f.Close() })
		}
	} else if testing.Verbose() {
		l.SetOutput(testWriter{t})
	}
	return l, hook
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func newKey(t testing.TB) string {
	k, err := wire.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func listenLocal(t testing.TB) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func startTunnel(t testing.TB, o tunnelOpts) *tunnel {
	t.Helper()
	logger, hook := testLogger(t)
	key := newKey(t)
	if o.protocol == "v1" {
		key = "v1 test key " + t.Name()
	}
	if o.key != "" {
		key = o.key
	}
	if o.probe == 0 {
		o.probe = 500 * time.Millisecond
	}
	sln := listenLocal(t)
	sport := sln.Addr().(*net.TCPAddr).Port
	scfg := &ServerConfig{
		Common: Common{Key: key, Protocol: o.protocol, MaxStreams: o.maxStreams, HalfClosedTimeout: o.halfClosed, RekeyAfter: o.rekeyAfter, Defense: o.defense,
			Backend: BackendConfig{Type: o.backend, Address: "127.0.0.1", Port: sport, Prefix: o.prefix}},
		Frontend:     FrontendConfig{Server: "127.0.0.1", Port: o.targetPort},
		ProbeTimeout: o.probe,
		MaxPending:   o.maxPending,
		Limits:       o.limits,
	}
	if o.resume == 0 {
		o.resume = -time.Second
	}
	scfg.ResumeTimeout, scfg.ResumeBuffer = cmp.Or(o.srvResume, o.resume), o.resumeBuffer
	scfg.KeepAlive = o.srvKeepalive
	scfg.Capture, scfg.CapturePlaintext = o.serverCapture, o.serverPlaintext
	if o.metrics {
		scfg.Metrics = "127.0.0.1:0"
	}
	noDrain := time.Duration(0) // stopping closes at once (drain_test.go tests the drain)
	scfg.DrainTimeout = &noDrain
	scfg.Backend.Path = o.path
	var cert string
	if o.backend == "tls" {
		cert, scfg.Backend.TLSKey = selfSigned(t)
		scfg.Backend.TLSCert = cert
	}
	if o.frontend != nil {
		scfg.Frontend = *o.frontend
	}
	srv, err := NewServer(scfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	if o.srvClock != nil && srv.resumes != nil {
		srv.resumes.clock = o.srvClock
	}
	if o.serverListener != nil {
		srv.UseListener(o.serverListener(sln))
	} else {
		srv.UseListener(sln)
	}
	tn := &tunnel{t: t, key: key, srv: srv, hook: hook, done: make(chan struct{}), srvCfg: scfg}
	ctx, cancel := context.WithCancel(context.Background())
	tn.cancel = cancel
	backendPort := sport
	if o.relay {
		tn.relay = startDelayRelay(t, sln.Addr().String(), o.delay)
		tn.relay.down.Store(o.relayDown)
		backendPort = tn.relay.port()
	}
	if o.via != nil {
		_, p, _ := net.SplitHostPort(o.via(sln.Addr().String()))
		backendPort, _ = strconv.Atoi(p)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Run(ctx); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	if !o.noClient {
		ckey := key
		if o.clientKey != "" {
			ckey = o.clientKey
		}
		cln := listenLocal(t)
		ccfg := &ClientConfig{
			Common: Common{Key: ckey, Protocol: o.protocol, MaxStreams: o.maxStreams, KeepAlive: o.keepalive, Defense: cmp.Or(o.cliDefense, o.defense), RekeyAfter: o.rekeyAfter,
				Backend: BackendConfig{Type: o.backend, Server: "127.0.0.1", Port: backendPort, Prefix: o.prefix}},
			Address: "127.0.0.1", Port: cln.Addr().(*net.TCPAddr).Port, RotateAfter: o.rotate, SessionWait: o.sessionWait,
			Listen: ListenConfig{Type: o.listen},
		}
		ccfg.ResumeTimeout, ccfg.ResumeBuffer = o.resume, o.resumeBuffer
		ccfg.RotateBytes = o.rotateB
		ccfg.Capture, ccfg.CapturePlaintext = o.clientCapture, o.clientPlaintext
		if o.metrics {
			ccfg.Metrics = "127.0.0.1:0"
		}
		ccfg.Backend.Path, ccfg.Backend.TLSCA = o.path, cert
		if cert != "" {
			ccfg.Backend.TLSServerName = "usocks.test"
		}
		cli, err := NewClient(ccfg, logger)
		if err != nil {
			t.Fatal(err)
		}
		cli.UseListener(cln)
		if o.clientNow != nil {
			cli.Now = o.clientNow
		}
		if o.cliClock != nil {
			cli.resumeClock = o.cliClock
		}
		cli.Backoff.Min = 20 * time.Millisecond
		cli.Backoff.Max = 200 * time.Millisecond
		cli.Backoff.Long = 500 * time.Millisecond
		if o.backoff != nil {
			cli.Backoff = o.backoff
		}
		tn.cli = cli
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cli.Run(ctx); err != nil {
				t.Errorf("client: %v", err)
			}
		}()
	}
	go func() { wg.Wait(); close(tn.done) }()
	t.Cleanup(tn.stop)
	return tn
}

func (tn *tunnel) stop() {
	tn.cancel()
	select {
	case <-tn.done:
	case <-time.After(20 * time.Second):
		tn.t.Error("tunnel did not stop within 20s")
	}
	if tn.relay != nil {
		tn.relay.close()
	}
}

// waitSession waits until the client has a session.
func (tn *tunnel) waitSession() {
	tn.t.Helper()
	select {
	case <-tn.cli.Sessions:
	case <-time.After(10 * time.Second):
		tn.t.Fatal("no session within 10s")
	}
}

// dial opens an app connection to the client and sends the target mode.
func (tn *tunnel) dial(mode byte) *net.TCPConn {
	tn.t.Helper()
	c, err := net.DialTimeout("tcp", tn.cli.Addr().String(), 5*time.Second)
	if err != nil {
		tn.t.Fatal(err)
	}
	// A write error here means the stream was reset already; the caller's
	// read sees it.
	_, _ = c.Write([]byte{mode})
	return c.(*net.TCPConn)
}

// expectReset opens an app connection that the tunnel must reset without
// delivering a byte. The reset may come so fast that the connect, or the
// write of the mode byte, reports it (and then a later read sees EOF: the
// kernel reports a reset once).
func (tn *tunnel) expectReset(what string) {
	tn.t.Helper()
	c, err := net.DialTimeout("tcp", tn.cli.Addr().String(), 5*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) {
			return
		}
		tn.t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{modeEcho}); err != nil {
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return
		}
		tn.t.Fatalf("%s: write: %v", what, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.Copy(io.Discard, c); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		tn.t.Fatalf("%s: read %d bytes, err %v; want a reset", what, n, err)
	}
}

func (tn *tunnel) serverAddr() string { return tn.srv.Addr().String() }

func portString(p int) string { return strconv.Itoa(p) }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
