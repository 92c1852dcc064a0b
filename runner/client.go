package runner

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	utls "github.com/refraction-networking/utls"
	"github.com/sirupsen/logrus"

	"usocks/runner/capture"
	"usocks/stages"
	"usocks/stages/frontend"
	"usocks/wire"
)

// AcceptQueueLen bounds local connections waiting for a session (while
// the backend reconnects). Beyond it the kernel's listen backlog holds them.
// Each waits at most session_wait, then is reset.
const AcceptQueueLen = 128

// Client is a usocks client: a local listener whose connections become
// streams of one tunnel to the server. The listener stays up while the
// backend reconnects.
type Client struct {
	live atomic.Pointer[clientLive] // the config in force (a reload replaces it)
	log  *logrus.Entry

	// Rand and Now are injected for tests; defaults crypto/rand, time.Now.
	Rand io.Reader
	Now  func() time.Time
	// Backoff is the reconnect policy.
	Backoff *Backoff
	// Stats counts streams of all sessions.
	Stats stages.Stats
	// Sessions is told each time a session is established (tests wait on it).
	Sessions chan struct{}
	// Rotations counts backend rotations; RotationPause sums, in
	// nanoseconds, the time resumable sessions spent between the retired
	// link and the next one.
	Rotations, RotationPause atomic.Int64
	// Reconnects counts sessions that ended and were dialled again.
	Reconnects atomic.Int64
	// authFails counts handshakes in a row without a valid reply (the
	// reconnect loop's own).
	authFails int
	// Resumes counts sessions resumed on a new backend (SPEC-v2.md §7b);
	// resumeNew those the server no longer held (it started a new one),
	// resumeExpired those given up at resume_timeout.
	Resumes                  atomic.Int64
	resumeNew, resumeExpired atomic.Int64
	// resumeClock makes the resume window's time and timers (realClock;
	// tests set a fake one before the client runs).
	resumeClock clock
	// resendKept sums the bytes of the sessions' resend buffers.
	resendKept atomic.Int64

	ln net.Listener
	// accepted hands app connections to the session's demux (unbuffered:
	// a send succeeds only when a session takes the connection); waiters
	// bounds the connections waiting for one, and wake tells the
	// reconnect loop that an app is waiting.
	accepted chan net.Conn
	waiters  chan struct{}
	wake     chan struct{}
	udp      *frontend.UDPRelay
	tls      *utls.Config         // tls backend
	capture  *capture.Writer      // nil unless cfg.Capture is set
	servers  *serverPicker        // where new sessions go
	metrics  *metrics             // nil unless cfg.Metrics is set
	local    *frontend.LocalProxy // client-side proxy (listen.type), or nil
	// reloading serialises reloads; baseLevel is the log level a config
	// without log_level goes back to.
	reloading sync.Mutex
	baseLevel logrus.Level
	// carry is a connection whose server refused to resume a session: it
	// carries the next session (the server started one on it).
	carry atomic.Pointer[established]
}

// clientLive is what a reload replaces: the config in force and the keys
// parsed from it. A session reads it once, as it starts.
type clientLive struct {
	cfg      *ClientConfig
	psk      *wire.PSK // v2
	identity *wire.PSK // multi-user server's identity key (server_key)
	cipher   wire.CipherID
}

// newClientLive parses the keys of a validated config.
func newClientLive(cfg *ClientConfig) (*clientLive, error) {
	l := &clientLive{cfg: cfg}
	if cfg.Protocol == "v1" {
		return l, nil
	}
	var err error
	if l.psk, err = cfg.PSK("client"); err != nil {
		return nil, err
	}
	if cfg.ServerKey != "" {
		k, err := wire.ParseKey(cfg.ServerKey)
		if err != nil {
			return nil, &ConfigError{"client.server_key", err.Error()}
		}
		l.identity = &k
	}
	l.cipher, _ = wire.ParseCipher(cfg.Cipher)
	return l, nil
}

// cfg is the config in force.
func (c *Client) cfg() *ClientConfig { return c.live.Load().cfg }

// NewClient checks the config and prepares a client.
func NewClient(cfg *ClientConfig, logger *logrus.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		log:         logger.WithFields(logrus.Fields{"side": "client"}),
		Rand:        rand.Reader,
		Now:         time.Now,
		Backoff:     DefaultBackoff(),
		resumeClock: realClock{},
		accepted:    make(chan net.Conn),
		waiters:     make(chan struct{}, AcceptQueueLen),
		wake:        make(chan struct{}, 1),
		Sessions:    make(chan struct{}, 1),
		servers:     newServerPicker(cfg.backendServers()),
	}
	l, err := newClientLive(cfg)
	if err != nil {
		return nil, err
	}
	c.live.Store(l)
	c.baseLevel = logger.GetLevel()
	setLogLevel(logger, cfg.LogLevel, c.baseLevel)
	clientFDs(c.log, cfg.MaxStreams)
	c.metrics = newClientMetrics(c)
	if cfg.Protocol == "v1" {
		c.log.Warn(v1Warning)
		return c, nil
	}
	warnDamagedKey(c.log, "client.key", cfg.Key)
	if cfg.Backend.Type == "tls" {
		if c.tls, err = clientTLS(&cfg.Backend); err != nil {
			return nil, err
		}
	}
	if cfg.Listen.Type != "" {
		c.local = &frontend.LocalProxy{Type: cfg.Listen.Type, HandshakeTimeout: cfg.Listen.HandshakeTimeout, Log: c.log.WithField("layer", "frontend")}
	}
	return c, nil
}

// Listen binds the local listener. Run calls it if it was not called.
func (c *Client) Listen() error {
	if c.ln != nil {
		return nil
	}
	// App connections need no TCP keepalive (they are local, and streams
	// have idle timeouts); skipping it saves syscalls on every accept.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", c.cfg().ListenAddr())
	if err != nil {
		return fmt.Errorf("client: listen on %s: %w", c.cfg().ListenAddr(), err)
	}
	c.ln = ln
	return nil
}

// UseListener makes Client serve on an already bound listener (tests, demo).
func (c *Client) UseListener(ln net.Listener) { c.ln = ln }

// Addr is the local listener's address (after Listen).
func (c *Client) Addr() net.Addr { return c.ln.Addr() }

// Run serves until ctx is done, then closes the tunnel gracefully.
func (c *Client) Run(ctx context.Context) error {
	if err := c.Listen(); err != nil {
		return err
	}
	if c.cfg().Capture != "" {
		cp, err := capture.Open(c.cfg().Capture, c.cfg().Protocol, "client", c.cfg().CapturePlaintext, c.cfg().CaptureMaxMiB<<20)
		if err != nil {
			_ = c.ln.Close()
			return err
		}
		c.capture = cp
		defer func() {
			if err := cp.Close(); err != nil {
				c.log.WithError(err).Warn("capture file incomplete")
			}
		}()
		c.log.WithFields(logrus.Fields{"file": c.cfg().Capture, "plaintext": c.cfg().CapturePlaintext}).Warn("capturing every session to a file")
	}
	started := logrus.Fields{"listen": c.ln.Addr().String(), "servers": c.servers.String(), "protocol": c.cfg().Protocol}
	if psk := c.live.Load().psk; psk != nil {
		started["key"] = KeyFingerprint(psk)
	}
	c.log.WithFields(started).Info("client started")
	stopMetrics, err := serveMetrics(ctx, c.metrics, c.cfg().Metrics, c.log)
	if err != nil {
		_ = c.ln.Close()
		return err
	}
	defer stopMetrics()
	defer startMemTrim()() // memory back to the OS after bursts (memtrim.go)
	if c.cfg().Protocol == "v2" && (c.cfg().UDP == nil || *c.cfg().UDP) && c.local == nil {
		// The UDP relay for SOCKS5 associations shares the TCP listener's
		// address and port; without it UDP is simply not offered.
		if pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(c.ln.Addr().(*net.TCPAddr).AddrPort())); err != nil {
			c.log.WithError(err).Warn("no UDP relay: SOCKS5 UDP associations will fail")
		} else {
			c.udp = frontend.NewUDPRelay(pc, c.log.WithField("layer", "frontend"))
			relayDone := make(chan struct{})
			go func() { defer close(relayDone); c.udp.Run() }()
			defer func() { _ = pc.Close(); <-relayDone }()
		}
	}
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		c.acceptLoop(ctx)
	}()
	defer func() {
		_ = c.ln.Close()
		<-acceptDone
		// Connections that never got a session are closed by their
		// waiters (ctx is done); wait for them.
		for range AcceptQueueLen {
			c.waiters <- struct{}{}
		}
	}()
	var draining sync.WaitGroup // sessions rotated away from, finishing their streams
	defer draining.Wait()
	for ctx.Err() == nil {
		// drain is closed by the session's rotation timer when the
		// session is not resumable (client_session.go).
		drain := make(chan struct{})
		done := make(chan error, 1)
		go func() { done <- c.session(ctx, drain) }()
		var err error
		select {
		case err = <-done:
		case <-drain:
			// Rotation: the old backend keeps its streams until they end;
			// new streams go to a new backend, opened now.
			c.Rotations.Add(1)
			c.log.Info("rotating to a new backend")
			draining.Add(1)
			go func() { defer draining.Done(); <-done }()
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if err := permanent(err); err != nil {
			c.log.WithError(err).Error("client stopped")
			return err
		}
		c.Reconnects.Add(1)
		c.backoff(ctx, c.failed(err))
	}
	c.log.Info("client stopped")
	return nil
}

func (c *Client) acceptLoop(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { _ = c.ln.Close() })
	defer stop()
	var local sync.WaitGroup // client-side proxy handshakes
	defer local.Wait()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.WithError(err).Warn("accept failed")
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return
			}
			continue
		}
		if c.local != nil {
			local.Add(1)
			go func() { defer local.Done(); c.localProxy(ctx, conn) }()
			continue
		}
		select {
		case c.waiters <- struct{}{}:
		case <-ctx.Done():
			_ = conn.Close()
			return
		}
		go c.waitForSession(ctx, conn)
	}
}

// localProxy answers the app's proxy request (client-side proxy mode) and
// hands the connection, with its target, to the sessions. Ending the
// client ends a pending request at once.
func (c *Client) localProxy(ctx context.Context, conn net.Conn) {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	tc, err := c.local.Accept(conn)
	if !stop() || err != nil {
		if err != nil {
			c.log.WithError(err).Debug("proxy request not served")
		}
		_ = conn.Close()
		return
	}
	select {
	case c.waiters <- struct{}{}:
	case <-ctx.Done():
		_ = conn.Close()
		return
	}
	c.waitForSession(ctx, tc)
}

// waitForSession hands an app connection to the session, waiting at most
// session_wait for one: a connection that no session takes in time is
// reset, so the app fails instead of hanging while the server is
// unreachable. A connection that waits cuts the reconnect backoff short.
func (c *Client) waitForSession(ctx context.Context, conn net.Conn) {
	defer func() { <-c.waiters }()
	select {
	case c.accepted <- conn:
		return
	default:
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(c.cfg().SessionWait)
	defer t.Stop()
	select {
	case c.accepted <- conn:
	case <-t.C:
		c.log.WithField("session_wait", c.cfg().SessionWait.String()).Warn("no session for an app connection in time: resetting it")
		resetConn(conn)
	case <-ctx.Done():
		_ = conn.Close()
	}
}

// backoff waits before the next session attempt: d.Wait, or less when an
// app connection is waiting (but at least d.Floor since the failure).
func (c *Client) backoff(ctx context.Context, d Delay) {
	start := time.Now()
	t := time.NewTimer(d.Wait)
	defer t.Stop()
	select {
	case <-t.C:
		return
	case <-ctx.Done():
		return
	case <-c.wake:
	}
	rest := d.Floor - time.Since(start)
	if rest <= 0 {
		return
	}
	c.log.Debug("an app is waiting: reconnecting now")
	t.Reset(rest)
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// resetConn closes an app connection so that the app sees a reset.
func resetConn(c net.Conn) {
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// dialBackend opens the backend: one TCP connection, or for multi_tcp
// (v1) `number` connections, one after another, joined into one stream.
func (c *Client) dialBackend(ctx context.Context, srv BackendServer) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	n := 1
	if c.cfg().Backend.Type == "multi_tcp" && c.cfg().Protocol == "v1" {
		n = c.cfg().Backend.Number // v2 runs lanes of their own (session_lanes.go)
	}
	var lanes []net.Conn
	for len(lanes) < n {
		conn, err := d.DialContext(ctx, "tcp", srv.Addr())
		if err != nil {
			for _, l := range lanes {
				_ = l.Close()
			}
			return nil, fmt.Errorf("connect to server: %w", err)
		}
		lanes = append(lanes, conn)
	}
	if c.tls != nil || c.cfg().Backend.Type == "ws" {
		return c.dialWrapped(ctx, lanes[0], srv.Server)
	}
	if n == 1 {
		return lanes[0], nil
	}
	return stages.NewStripedConn(lanes, c.cfg().Backend.Blocksize)
}

// permanent returns an error to stop on, instead of reconnecting, when a
// session failed in a way that retrying cannot fix: the server's
// certificate did not verify (wrong name, wrong or missing CA, expired).
func permanent(err error) error {
	var ve *utls.CertificateVerificationError
	var pe *PinError
	if errors.As(err, &pe) {
		return fmt.Errorf("%w (not retrying: check backend.tls_pin, and the server's certificate)", err)
	}
	if errors.As(err, &ve) {
		return fmt.Errorf("%w (not retrying: check backend.tls_server_name and backend.tls_ca, and the server's certificate)", err)
	}
	return nil
}

// v1Warning is logged once by every v1 client and server.
const v1Warning = "protocol v1 is the weak legacy protocol (AES-128-CBC with one static MD5 key, no replay protection, no forward secrecy); use it only with old peers — v2 is the default"
