package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"
)

// drainPair is a server and a client on loopback whose server can be
// stopped on its own.
type drainPair struct {
	srv     *Server
	cli     *Client
	hook    *test.Hook
	stopSrv context.CancelFunc
	stopCli context.CancelFunc
	srvDone chan error
	cliDone chan error
}

func startDrainPair(t *testing.T, drain time.Duration) *drainPair {
	t.Helper()
	return startDrainPairWith(t, drain, nil)
}

// startDrainPairWith is startDrainPair with the configs changed by edit
// (if set) before the server and client are made.
func startDrainPairWith(t *testing.T, drain time.Duration, edit func(*ServerConfig, *ClientConfig)) *drainPair {
	t.Helper()
	tg := startTarget(t)
	logger, hook := testLogger(t)
	key := newKey(t)
	sln := listenLocal(t)
	scfg := &ServerConfig{
		Common:       Common{Key: key, Backend: BackendConfig{Address: "127.0.0.1", Port: sln.Addr().(*net.TCPAddr).Port}},
		Frontend:     FrontendConfig{Server: "127.0.0.1", Port: tg.port()},
		ProbeTimeout: 500 * time.Millisecond,
		DrainTimeout: &drain,
	}
	cln := listenLocal(t)
	ccfg := &ClientConfig{
		Common:  Common{Key: key, Backend: BackendConfig{Server: "127.0.0.1", Port: scfg.Backend.Port}},
		Address: "127.0.0.1", Port: cln.Addr().(*net.TCPAddr).Port,
	}
	if edit != nil {
		edit(scfg, ccfg)
	}
	srv, err := NewServer(scfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv.UseListener(sln)
	cli, err := NewClient(ccfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	cli.UseListener(cln)
	cli.Backoff.Min, cli.Backoff.Max, cli.Backoff.Long = 20*time.Millisecond, 200*time.Millisecond, 500*time.Millisecond
	sctx, stopSrv := context.WithCancel(context.Background())
	cctx, stopCli := context.WithCancel(context.Background())
	p := &drainPair{srv: srv, cli: cli, hook: hook, stopSrv: stopSrv, stopCli: stopCli, srvDone: make(chan error, 1), cliDone: make(chan error, 1)}
	go func() { p.srvDone <- srv.Run(sctx) }()
	go func() { p.cliDone <- cli.Run(cctx) }()
	t.Cleanup(func() {
		stopSrv()
		stopCli()
		for _, ch := range []chan error{p.srvDone, p.cliDone} {
			select {
			case err := <-ch:
				if err != nil {
					t.Errorf("run: %v", err)
				}
				ch <- nil // for a second look
			case <-time.After(20 * time.Second):
				t.Error("server or client did not stop")
			}
		}
	})
	select {
	case <-cli.Sessions:
	case <-time.After(10 * time.Second):
		t.Fatal("no session")
	}
	return p
}

// logged reports whether an entry with this message (prefix) was logged.
func (p *drainPair) logged(msg string) bool {
	for _, e := range p.hook.AllEntries() {
		if strings.HasPrefix(e.Message, msg) {
			return true
		}
	}
	return false
}

// waitStopped waits for the server's Run to return.
func (p *drainPair) waitStopped(t *testing.T) {
	t.Helper()
	select {
	case err := <-p.srvDone:
		if err != nil {
			t.Errorf("server: %v", err)
		}
		p.srvDone <- err
	case <-time.After(20 * time.Second):
		t.Fatal("server did not stop")
	}
}

// stopClient stops the client and waits for its Run to return.
func (p *drainPair) stopClient(t *testing.T) {
	t.Helper()
	p.stopCli()
	select {
	case err := <-p.cliDone:
		if err != nil {
			t.Errorf("client: %v", err)
		}
		p.cliDone <- err
	case <-time.After(20 * time.Second):
		t.Fatal("client did not stop")
	}
}

// echoStream opens an echo stream through the client and checks the
// first chunk of payload comes back.
func (p *drainPair) echoStream(t *testing.T, first []byte) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.cli.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(append([]byte{modeEcho}, first...)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(first))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("first echo: %v", err)
	}
	return c.(*net.TCPConn)
}

// TestDrainLetsRunningStreamsFinish: a server asked to stop takes no new
// backend connection and no new stream, lets a running transfer finish
// byte-exact (SHA-256), then closes the session cleanly.
func TestDrainLetsRunningStreamsFinish(t *testing.T) {
	p := startDrainPair(t, 20*time.Second)
	payload := make([]byte, 1<<20)
	Pattern(payload, 11)
	half := len(payload) / 2
	c := p.echoStream(t, payload[:half])

	p.stopSrv()
	waitFor(t, "the drain", 10*time.Second, func() bool { return p.logged("server draining") })
	// No new backend connection…
	if b, err := net.DialTimeout("tcp", p.srv.Addr().String(), 5*time.Second); err == nil {
		b.Close()
		t.Error("a new backend connection was accepted during the drain")
	}
	// …and no new stream: the app is reset.
	n := p.srv.Stats.StreamsOpened.Load()
	refused, err := net.DialTimeout("tcp", p.cli.Addr().String(), 5*time.Second)
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		// The client opens the stream as it accepts, before any data:
		// the server's refusal and the client's reset can come back
		// before the dialer has seen its connect complete.
	case err != nil:
		t.Fatal(err)
	default:
		_ = refused.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = refused.Write([]byte{modeEcho, 'x'})
		if got, err := io.ReadAll(refused); len(got) != 0 || !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("a new stream during the drain: read %q, %v; want a reset", got, err)
		}
		refused.Close()
	}
	if p.srv.Stats.StreamsOpened.Load() == n {
		t.Error("the new stream never reached the server")
	}

	// The running stream finishes.
	if _, err := c.Write(payload[half:]); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	rest, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("the running stream after the stop: %v", err)
	}
	if sha256.Sum256(append(payload[:half:half], rest...)) != sha256.Sum256(payload) {
		t.Fatalf("echo differs: %d of %d bytes back after the stop", len(rest), len(payload)-half)
	}
	p.waitStopped(t)
	if p.srv.Clean.Load() != 1 || p.srv.Failed.Load() != 0 {
		t.Errorf("sessions clean %d, failed %d; want one clean close", p.srv.Clean.Load(), p.srv.Failed.Load())
	}
	if p.logged("drain timeout") {
		t.Error("the drain ran out although the stream finished")
	}
	waitFor(t, "the client to see a clean close", 10*time.Second, func() bool { return p.logged("session closed by server") })
}

// TestDrainTimeoutCutsLongStreams: a stream that outlasts drain_timeout is
// reset when it runs out (at once with drain_timeout 0), and the server
// stops.
func TestDrainTimeoutCutsLongStreams(t *testing.T) {
	for _, drain := range []time.Duration{0, 200 * time.Millisecond} {
		t.Run(drain.String(), func(t *testing.T) {
			p := startDrainPair(t, drain)
			c := p.echoStream(t, []byte("never finished"))
			p.stopSrv()
			got, err := io.ReadAll(c)
			if len(got) != 0 || !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the long stream: read %q, %v; want a reset", got, err)
			}
			p.waitStopped(t)
			if cut := p.logged("drain timeout"); cut != (drain > 0) {
				t.Errorf("drain timeout logged: %v, want %v", cut, drain > 0)
			}
			if p.srv.Failed.Load() != 0 {
				t.Errorf("%d sessions failed; the close at the deadline is a clean CLOSE", p.srv.Failed.Load())
			}
		})
	}
}

// TestDrainTimeoutConfig: unset is the default, 0 is kept (close at once).
func TestDrainTimeoutConfig(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want time.Duration
	}{
		{"", DefaultDrainTimeout},
		{"  drain_timeout: 0s\n", 0},
		{"  drain_timeout: 2m\n", 2 * time.Minute},
	} {
		cfg, err := ParseConfig([]byte("server:\n  key: " + newKey(t) + "\n" + tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Server.Validate(); err != nil {
			t.Fatal(err)
		}
		if got := *cfg.Server.DrainTimeout; got != tc.want {
			t.Errorf("%q: drain_timeout %v, want %v", tc.yaml, got, tc.want)
		}
	}
}

// TestDrainDeliversTailAfterClose: a download whose server side ended
// just before the drain closed the session (CLOSE right behind the
// stream's last data and FIN) reaches a slow app whole (SHA-256) and
// ends with a clean EOF: the client delivers a stream whose FIN it has
// received before it ends the session (SPEC-v2.md §7). The app reads at a
// pace, so the tail still waits in the client's receive buffer when the
// CLOSE arrives.
func TestDrainDeliversTailAfterClose(t *testing.T) {
	const size = 4 << 20
	p := startDrainPair(t, 20*time.Second)
	c, err := net.DialTimeout("tcp", p.cli.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	req := binary.BigEndian.AppendUint64([]byte{modeSource}, size)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite() // the server's stream ends with its last byte
	h := sha256.New()
	buf := make([]byte, 16<<10)
	n, err := io.ReadFull(c, buf)
	if err != nil {
		t.Fatal(err)
	}
	h.Write(buf[:n])
	got := n
	p.stopSrv()
	waitFor(t, "the drain", 10*time.Second, func() bool { return p.logged("server draining") })
	for {
		time.Sleep(time.Millisecond) // a slow app: the tunnel's buffers stay full
		n, err := c.Read(buf)
		h.Write(buf[:n])
		got += n
		if err != nil {
			if err != io.EOF {
				t.Fatalf("download after %d of %d bytes: %v", got, size, err)
			}
			break
		}
	}
	want := make([]byte, size)
	for off := 0; off < size; off += 64 << 10 {
		Pattern(want[off:off+64<<10], 7) // the target repeats one 64 KiB block
	}
	if got != size || !bytes.Equal(h.Sum(nil), sha256Sum(want)) {
		t.Fatalf("download: %d of %d bytes, SHA-256 match %v", got, size, bytes.Equal(h.Sum(nil), sha256Sum(want)))
	}
	p.waitStopped(t)
	if p.srv.Clean.Load() != 1 || p.srv.Failed.Load() != 0 {
		t.Errorf("sessions clean %d, failed %d; want one clean close", p.srv.Clean.Load(), p.srv.Failed.Load())
	}
	if p.logged("drain timeout") {
		t.Error("the drain ran out although the stream finished")
	}
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
