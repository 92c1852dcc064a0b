package runner

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"usocks/stages/frontend"
	"usocks/wire"
)

// startServerWith runs a server with cfg on loopback until the test ends;
// its log is in the hook.
func startServerWith(t *testing.T, cfg *ServerConfig) (*Server, *test.Hook) {
	t.Helper()
	logger, hook := testLogger(t)
	sln := listenLocal(t)
	cfg.Backend.Address, cfg.Backend.Port = "127.0.0.1", sln.Addr().(*net.TCPAddr).Port
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 300 * time.Millisecond
	}
	srv, err := NewServer(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv.UseListener(sln)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv, hook
}

// startLimitClient runs a client with its own key against srv; stop ends it.
func startLimitClient(t *testing.T, srv *Server, key, serverKey string) (tn *tunnel, stop func()) {
	t.Helper()
	cli, stop := startClientWith(t, &ClientConfig{Common: Common{Key: key, Backend: BackendConfig{Server: "127.0.0.1", Port: srv.Addr().(*net.TCPAddr).Port}},
		ServerKey: serverKey, SessionWait: 300 * time.Millisecond})
	return &tunnel{t: t, cli: cli, srv: srv}, stop
}

// loggedErr says whether the hook saw msg with an error that mentions key.
func loggedErr(hook *test.Hook, msg, key string) bool {
	for _, e := range hook.AllEntries() {
		if e.Message != msg {
			continue
		}
		if err, _ := e.Data[logrus.ErrorKey].(error); err != nil && strings.Contains(err.Error(), key) {
			return true
		}
	}
	return false
}

// TestSessionLimits: the session past max_sessions_per_user (that user's
// third) or past max_sessions (the server's third) is refused with a
// clear log line and a counted refusal; the sessions already running keep
// carrying SHA-256-checked data, another user is not affected by the
// per-user limit, and once a session ends the refused client gets in.
func TestSessionLimits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		multi bool
		lim   Limits
		key   string
	}{
		{"per user", true, Limits{MaxSessionsPerUser: 2}, "max_sessions_per_user"},
		{"overall", false, Limits{MaxSessions: 2}, "max_sessions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := startTarget(t)
			identity, alice, bob := newKey(t), newKey(t), newKey(t)
			cfg := &ServerConfig{Common: Common{Key: identity}, Frontend: FrontendConfig{Server: "127.0.0.1", Port: tg.port()}, Limits: tc.lim}
			key, other, serverKey := alice, bob, identity
			if tc.multi {
				cfg.Clients = map[string]string{"alice": alice, "bob": bob}
			} else {
				key, other, serverKey = identity, "", ""
			}
			srv, hook := startServerWith(t, cfg)
			first, stopFirst := startLimitClient(t, srv, key, serverKey)
			second, _ := startLimitClient(t, srv, key, serverKey)
			first.waitSession()
			second.waitSession()
			waitFor(t, "two sessions", 10*time.Second, func() bool { return srv.limits.count() == 2 })
			echoOK(t, first.cli, 300_000, 1)
			echoOK(t, second.cli, 300_000, 2)

			third, _ := startLimitClient(t, srv, key, serverKey)
			waitFor(t, "the refusal", 10*time.Second, func() bool { return loggedErr(hook, "session refused by a limit", tc.key) })
			if srv.limits.Refused.Sessions.Load() == 0 {
				t.Fatal("refusal not counted")
			}
			third.expectReset("a stream of the refused client")
			if tc.multi {
				o, _ := startLimitClient(t, srv, other, serverKey)
				o.waitSession()
				echoOK(t, o.cli, 300_000, 3)
			}
			echoOK(t, first.cli, 300_000, 4)
			echoOK(t, second.cli, 300_000, 5)

			stopFirst() // a slot frees: the refused client gets in
			deadline := time.Now().Add(15 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := echoThrough(ctx, third, 100_000, 6)
				cancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the refused client did not get in after a session ended: %v", err)
				}
			}
		})
	}
}

// TestSessionDialLimits: a session's dials are bounded by
// session_dial_rate (a dial that would wait past its deadline is refused)
// and session_max_dials (a dial waits for a slot until its deadline).
func TestSessionDialLimits(t *testing.T) {
	l := newLimiter(Limits{MaxSessions: 4, MaxSessionsPerUser: 4, SessionMaxDials: 2, SessionDialRate: 3, SessionMaxUDP: 1}, false, nil)
	quiet, _ := test.NewNullLogger()
	sl, err := l.open(wire.UserID{}, logrus.NewEntry(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer sl.close()
	short := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 50*time.Millisecond)
	}
	var dones []func()
	for i := range 2 {
		ctx, cancel := short()
		done, err := sl.Dial(ctx)
		cancel()
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		dones = append(dones, done)
	}
	ctx, cancel := short()
	_, err = sl.Dial(ctx) // a token is left, but both slots are taken
	cancel()
	var le *limitError
	if !errors.As(err, &le) || le.key != "session_max_dials" || !errors.Is(err, frontend.ErrLimit) {
		t.Fatalf("third concurrent dial: %v, want session_max_dials", err)
	}
	dones[0]()
	ctx, cancel = short()
	done, err := sl.Dial(ctx) // the last token of the burst
	cancel()
	if err != nil {
		t.Fatalf("dial after a slot freed: %v", err)
	}
	done()
	dones[1]()
	ctx, cancel = short()
	_, err = sl.Dial(ctx) // the burst is spent; the next token is 333 ms away
	cancel()
	if !errors.As(err, &le) || le.key != "session_dial_rate" {
		t.Fatalf("dial past the rate: %v, want session_dial_rate", err)
	}
	if n := l.Refused.Dials.Load(); n != 2 {
		t.Fatalf("refused dials counted %d, want 2", n)
	}
}

// TestSessionDialRateEndToEnd: through a redirect frontend, the streams a
// session opens past session_dial_rate are reset with a log line; the
// others carry SHA-256-checked data.
func TestSessionDialRateEndToEnd(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), limits: Limits{SessionDialRate: 3},
		frontend: &FrontendConfig{Server: "127.0.0.1", Port: tg.port(), DialTimeout: 200 * time.Millisecond}})
	tn.waitSession()
	const streams = 12
	errs := make(chan error, streams)
	for i := range streams {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errs <- echoThrough(ctx, tn, 50_000, uint64(i))
		}()
	}
	ok, failed := 0, 0
	for range streams {
		if err := <-errs; err == nil {
			ok++
		} else if errors.Is(err, ErrEchoMismatch) && !strings.Contains(err.Error(), "got 0") {
			t.Fatalf("a stream lost data: %v", err)
		} else {
			failed++
		}
	}
	if ok < 3 || failed == 0 {
		t.Fatalf("%d streams passed, %d were refused: want the burst of 3 to pass and the rest refused", ok, failed)
	}
	if !loggedErr(tn.hook, "stream refused by a limit", "session_dial_rate") {
		t.Fatal("no log line names session_dial_rate")
	}
	if tn.srv.limits.Refused.Dials.Load() == 0 {
		t.Fatal("refused dials not counted")
	}
}

// TestSessionMaxUDP: the association past session_max_udp gets a SOCKS5
// failure reply; the first keeps working; once it ends, a new one opens.
func TestSessionMaxUDP(t *testing.T) {
	dns := dnsServer(t)
	yes := true
	tn := startTunnel(t, tunnelOpts{limits: Limits{SessionMaxUDP: 1},
		frontend: &FrontendConfig{Type: "socks5", Allow: []string{"127.0.0.0/8"}, UDP: &yes}})
	tn.waitSession()
	proxy := tn.cli.Addr().String()
	app := appUDP(t)
	ctrl, relay := socksUDP(t, proxy)
	dnsRoundTrip(t, app, relay, dns, 1)
	c, code, _ := socksAssociate(t, proxy)
	_ = c.Close()
	if code != frontend.SocksGeneralFailure {
		t.Fatalf("second association: reply %d, want general failure", code)
	}
	if !loggedErr(tn.hook, "stream refused by a limit", "session_max_udp") {
		t.Fatal("no log line names session_max_udp")
	}
	dnsRoundTrip(t, app, relay, dns, 2) // the first association still works
	_ = ctrl.Close()
	// Its end gives the socket back: a new association opens (and is
	// answered).
	waitFor(t, "a new association", 10*time.Second, func() bool {
		c, code, _ := socksAssociate(t, proxy)
		_ = c.Close()
		return code == frontend.SocksSucceeded
	})
}

// TestFileDescriptorGuard: near the descriptor budget, a new stream is
// reset and a new session refused, with a log line; the streams and the
// session already open carry on (SHA-256 checked); what ends gives its
// descriptors back.
func TestFileDescriptorGuard(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), noClient: true})
	// Room for one session and two streams.
	tn.srv.limits.fds = &fdGuard{limit: 1 << 20, budget: 3}
	cli, _ := startLimitClient(t, tn.srv, tn.key, "")
	cli.waitSession()
	a, b := cli.dial(modeEcho), cli.dial(modeEcho)
	defer a.Close()
	defer b.Close()
	for _, c := range []net.Conn{a, b} { // both streams are open
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		var buf [4]byte
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Time{})
	}
	cli.expectReset("a stream past the descriptor budget")
	if !loggedErr(tn.hook, "stream refused by a limit", "file descriptors") {
		t.Fatal("no log line names the descriptor limit")
	}
	other, stopOther := startLimitClient(t, tn.srv, tn.key, "")
	waitFor(t, "the session refusal", 10*time.Second, func() bool {
		return loggedErr(tn.hook, "session refused by a limit", "file descriptors")
	})
	other.expectReset("a stream of a session past the descriptor budget")
	stopOther() // else it gets in as soon as the streams below end
	for i, c := range []net.Conn{a, b} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := EchoCheck(ctx, c, 200_000, uint64(i))
		cancel()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	_ = a.Close()
	_ = b.Close()
	waitFor(t, "the streams' descriptors back", 10*time.Second, func() bool { return tn.srv.limits.fds.held.Load() == 1 })
	echoOK(t, cli.cli, 300_000, 9)
	if tn.srv.limits.Refused.FDs.Load() < 2 {
		t.Fatalf("descriptor refusals counted %d, want the stream and the session", tn.srv.limits.Refused.FDs.Load())
	}
}

func TestFDGuardBudget(t *testing.T) {
	for _, tc := range []struct {
		limit   int64
		pending int
		want    int64
	}{
		{0, 4096, 0}, // unknown limit: no budget, nothing refused
		{1 << 20, 4096, 1<<20 - 64 - 4096},
		{1024, 4096, (1024 - 64) / 2}, // pending takes at most half
		{10, 1, 1},
	} {
		g := newFDGuard(tc.limit, tc.pending)
		if g.budget != tc.want {
			t.Errorf("limit %d pending %d: budget %d, want %d", tc.limit, tc.pending, g.budget, tc.want)
		}
		if tc.limit == 0 {
			if !g.take(1 << 30) {
				t.Error("no limit: refused")
			}
			continue
		}
		if !g.take(g.budget) || g.take(1) {
			t.Errorf("limit %d: the budget is not the bound", tc.limit)
		}
		g.put(1)
		if !g.take(1) {
			t.Errorf("limit %d: a descriptor given back is not available", tc.limit)
		}
	}
}

// TestFileLimitWarning: the open file limit is raised to the hard limit,
// and a configuration that could need more descriptors than it allows is
// told at start, with the limits that need them.
func TestFileLimitWarning(t *testing.T) {
	soft, hard, err := raiseFileLimit()
	if err != nil || soft == 0 {
		t.Skipf("no finite RLIMIT_NOFILE here (%v)", err)
	}
	if soft != hard {
		t.Fatalf("soft limit %d not raised to the hard limit %d", soft, hard)
	}
	logger, hook := test.NewNullLogger()
	log := logrus.NewEntry(logger)
	if got := serverFDs(log, 1, 1); got != soft {
		t.Fatalf("limit %d, want the soft limit %d", got, soft)
	}
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			t.Fatalf("a small configuration warned: %s", e.Message)
		}
	}
	serverFDs(log, 1, int(soft)) // max_sessions as large as the limit
	e := hook.LastEntry()
	if e == nil || e.Level != logrus.WarnLevel || e.Data["max_sessions"] != int(soft) || !strings.Contains(e.Message, "open file limit") {
		t.Fatalf("no warning for a limit below max_sessions: %v", e)
	}
}
