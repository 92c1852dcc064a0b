package runner

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"usocks/internal/redistest"
	"usocks/redisstore"
)

// startReplica runs a server with cfg in front of the test target until
// the test ends (or until the returned stop is called).
func startReplica(t testing.TB, cfg *ServerConfig, targetPort int) (*Server, *test.Hook, func()) {
	t.Helper()
	logger, hook := testLogger(t)
	ln := listenLocal(t)
	cfg.Backend.Address, cfg.Backend.Port = "127.0.0.1", ln.Addr().(*net.TCPAddr).Port
	cfg.Frontend = FrontendConfig{Server: "127.0.0.1", Port: targetPort}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 300 * time.Millisecond
	}
	srv, stop := runServerOn(t, cfg, logger, ln)
	return srv, hook, stop
}

// runServerOn runs a server with cfg on ln until stop or the end of the
// test.
func runServerOn(t testing.TB, cfg *ServerConfig, logger *logrus.Logger, ln net.Listener) (*Server, func()) {
	t.Helper()
	srv, err := NewServer(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv.UseListener(ln)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		if err := srv.Run(ctx); err != nil {
			t.Errorf("server: %v", err)
		}
		close(done)
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return srv, stop
}

func port(s *Server) int { return s.Addr().(*net.TCPAddr).Port }

// logged reports whether an entry at level or worse says substr in its
// message or its reason.
func logged(hook *test.Hook, level logrus.Level, substr string) bool {
	for _, e := range hook.AllEntries() {
		reason, _ := e.Data["reason"].(string)
		if e.Level <= level && (strings.Contains(e.Message, substr) || strings.Contains(reason, substr)) {
			return true
		}
	}
	return false
}

func echoOK(t *testing.T, cli *Client, n int, seed uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := echoThrough(ctx, &tunnel{t: t, cli: cli}, n, seed); err != nil {
		t.Fatal(err)
	}
}

// openEcho opens an app connection through cli to the echo target; the
// test closes it.
func openEcho(t *testing.T, cli *Client) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", cli.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write([]byte{modeEcho}); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReplicasShareReplayStore: a first flight captured on its way to
// replica A and replayed to replica B gets the invalid-input reaction
// there and opens no stream; B serves a fresh client.
func TestReplicasShareReplayStore(t *testing.T) {
	rs := redistest.Start(t)
	tg := startTarget(t)
	key := newKey(t)
	replica := func() *ServerConfig {
		return &ServerConfig{Common: Common{Key: key}, ScaleOutConfig: ScaleOutConfig{ReplayStore: rs.URL(0)}}
	}
	a, _, _ := startReplica(t, replica(), tg.port())
	b, hookB, _ := startReplica(t, replica(), tg.port())
	rl := startRelay(t, a.Addr().String())
	defer rl.close()
	cli, ok := runClient(t, &ClientConfig{Common: Common{Key: key, Backend: BackendConfig{Server: "127.0.0.1", Port: rl.port()}}}, 10*time.Second)
	if !ok {
		t.Fatal("no session at replica A")
	}
	echoOK(t, cli, 100_000, 1)
	flight := rl.first(0) // the whole client stream: first flight, SYN, data
	streams := tg.accepted.Load()
	r, _ := probe(b.Addr().String(), flight, 3*time.Second)
	if r.bytesBack != 0 || r.how != "FIN" {
		t.Fatalf("replay at replica B: %d bytes back, %s; want the invalid-input reaction", r.bytesBack, r.how)
	}
	if b.Sessions.Load() != 0 || tg.accepted.Load() != streams {
		t.Fatalf("replay at replica B opened sessions %d, target connections %d → %d", b.Sessions.Load(), streams, tg.accepted.Load())
	}
	if !logged(hookB, logrus.WarnLevel, "replayed salt") {
		t.Fatal("replica B did not refuse the flight as a replay")
	}
	cliB, ok := runClient(t, &ClientConfig{Common: Common{Key: key, Backend: BackendConfig{Server: "127.0.0.1", Port: port(b)}}}, 10*time.Second)
	if !ok {
		t.Fatal("no session at replica B")
	}
	echoOK(t, cliB, 100_000, 2)
}

// TestStoreUsersAddRevoke: a user added to the store is accepted by both
// replicas without a restart; once revoked, new sessions are refused by
// both while a stream opened before goes on.
func TestStoreUsersAddRevoke(t *testing.T) {
	rs := redistest.Start(t)
	tg := startTarget(t)
	identity, alice := newKey(t), newKey(t)
	replica := func() *ServerConfig {
		return &ServerConfig{Common: Common{Key: identity},
			ScaleOutConfig: ScaleOutConfig{ReplayStore: rs.URL(0), ClientsFromStore: true, ClientsRefresh: 50 * time.Millisecond}}
	}
	a, _, _ := startReplica(t, replica(), tg.port())
	b, _, _ := startReplica(t, replica(), tg.port())
	user := func(s *Server) *ClientConfig {
		return &ClientConfig{Common: Common{Key: alice, Backend: BackendConfig{Server: "127.0.0.1", Port: port(s)}}, ServerKey: identity}
	}
	if _, ok := runClient(t, user(a), time.Second); ok {
		t.Fatal("a user unknown to the store got a session")
	}
	rdb, err := redisstore.Connect(rs.URL(0))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.HSet(ctx, redisstore.DefaultPrefix+"clients", "alice", alice).Err(); err != nil {
		t.Fatal(err)
	}
	var held *Client
	for i, s := range []*Server{a, b} {
		cli, ok := runClient(t, user(s), 10*time.Second)
		if !ok {
			t.Fatalf("replica %d: the added user got no session", i)
		}
		echoOK(t, cli, 50_000, uint64(i))
		held = cli
	}
	c := openEcho(t, held) // a stream opened before the revocation
	waitFor(t, "the stream to open", 5*time.Second, func() bool { return b.Stats.StreamsOpened.Load() >= 2 })
	if err := rdb.HDel(ctx, redisstore.DefaultPrefix+"clients", "alice").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both replicas to drop the user", 5*time.Second, func() bool {
		return a.replay.users.Len() == 0 && b.replay.users.Len() == 0
	})
	for i, s := range []*Server{a, b} {
		before := s.Rejected.Load()
		if _, ok := runClient(t, user(s), 1500*time.Millisecond); ok {
			t.Fatalf("replica %d: a revoked user got a session", i)
		}
		if s.Rejected.Load() == before {
			t.Fatalf("replica %d refused nothing", i)
		}
	}
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := EchoCheck(ectx, c, 200_000, 9); err != nil {
		t.Fatalf("the stream opened before the revocation: %v", err)
	}
	if a.Failed.Load()+b.Failed.Load() != 0 {
		t.Fatal("a running session failed")
	}
}

// TestStoreDownFailsClosed: with the store stopped, new handshakes are
// refused (counted and logged) and a running session goes on.
func TestStoreDownFailsClosed(t *testing.T) {
	rs := redistest.Start(t)
	tg := startTarget(t)
	key := newKey(t)
	srv, hook, _ := startReplica(t, &ServerConfig{Common: Common{Key: key}, ScaleOutConfig: ScaleOutConfig{ReplayStore: rs.URL(0)}}, tg.port())
	cfg := func() *ClientConfig {
		return &ClientConfig{Common: Common{Key: key, Backend: BackendConfig{Server: "127.0.0.1", Port: port(srv)}}}
	}
	cli, ok := runClient(t, cfg(), 10*time.Second)
	if !ok {
		t.Fatal("no session")
	}
	c := openEcho(t, cli)
	rs.Stop()
	if _, ok := runClient(t, cfg(), 1500*time.Millisecond); ok {
		t.Fatal("a new session while the replay store is down")
	}
	waitFor(t, "refusals to be counted", 5*time.Second, func() bool { return srv.StoreDown.Load() >= 1 })
	if !logged(hook, logrus.ErrorLevel, "replay store unreachable") {
		t.Fatal("no log line says the store is unreachable")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := EchoCheck(ctx, c, 500_000, 3); err != nil {
		t.Fatalf("the running session: %v", err)
	}
	if srv.Sessions.Load() != 1 || srv.Failed.Load() != 0 {
		t.Fatalf("sessions %d, failed %d; want the first one running", srv.Sessions.Load(), srv.Failed.Load())
	}
}

// TestReplayStateAcrossRestart (issue 11.6): a flight from a client whose
// clock runs 25 s ahead, answered before a restart, is refused after it
// (the state file carries its salt).
func TestReplayStateAcrossRestart(t *testing.T) {
	tg := startTarget(t)
	key := newKey(t)
	state := filepath.Join(t.TempDir(), "salts")
	cfg := func() *ServerConfig {
		return &ServerConfig{Common: Common{Key: key}, ScaleOutConfig: ScaleOutConfig{ReplayState: state}}
	}
	a, _, stopA := startReplica(t, cfg(), tg.port())
	rl := startRelay(t, a.Addr().String())
	defer rl.close()
	logger, _ := testLogger(t)
	cln := listenLocal(t)
	cli, err := NewClient(&ClientConfig{Common: Common{Key: key, Backend: BackendConfig{Server: "127.0.0.1", Port: rl.port()}},
		Address: "127.0.0.1", Port: cln.Addr().(*net.TCPAddr).Port}, logger)
	if err != nil {
		t.Fatal(err)
	}
	cli.UseListener(cln)
	cli.Now = func() time.Time { return time.Now().Add(25 * time.Second) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = cli.Run(ctx); close(done) }()
	select {
	case <-cli.Sessions:
	case <-time.After(10 * time.Second):
		t.Fatal("no session")
	}
	echoOK(t, cli, 10_000, 4)
	cancel()
	<-done
	flight := rl.first(0)
	stopA()
	b, hookB, _ := startReplica(t, cfg(), tg.port())
	r, _ := probe(b.Addr().String(), flight, 3*time.Second)
	if r.bytesBack != 0 || r.how != "FIN" || b.Sessions.Load() != 0 {
		t.Fatalf("replay after a restart: %d bytes back, %s, %d sessions; want the invalid-input reaction", r.bytesBack, r.how, b.Sessions.Load())
	}
	if !logged(hookB, logrus.WarnLevel, "replayed salt") {
		t.Fatal("not refused as a replay")
	}
}
