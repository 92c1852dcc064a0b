package runner

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// runClient starts a client with cfg against a server and reports whether
// it got a session within wait.
func runClient(t *testing.T, cfg *ClientConfig, wait time.Duration) (*Client, bool) {
	cli, _ := startClientWith(t, cfg)
	select {
	case <-cli.Sessions:
		return cli, true
	case <-time.After(wait):
		return cli, false
	}
}

// startClientWith runs a client with cfg on loopback (short backoff) until
// the test ends or stop is called.
func startClientWith(t *testing.T, cfg *ClientConfig) (cli *Client, stop func()) {
	logger, _ := testLogger(t)
	cln := listenLocal(t)
	cfg.Address, cfg.Port = "127.0.0.1", cln.Addr().(*net.TCPAddr).Port
	cli, err := NewClient(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	cli.UseListener(cln)
	cli.Backoff.Min, cli.Backoff.Max = 20*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = cli.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return cli, stop
}

// startMultiUserServer runs a multi-user server (identity key, users by
// name) until the test ends.
func startMultiUserServer(t *testing.T, identity string, users map[string]string, targetPort int, probe time.Duration) *Server {
	t.Helper()
	srv, _ := startServerWith(t, &ServerConfig{
		Common:       Common{Key: identity},
		Frontend:     FrontendConfig{Server: "127.0.0.1", Port: targetPort},
		Clients:      users,
		ProbeTimeout: probe,
	})
	return srv
}

// TestMultiUserServer: two clients with their own keys share a server that
// knows them by their identity hints; a client whose key was removed, or
// that sends no hint, gets the invalid-input reaction.
func TestMultiUserServer(t *testing.T) {
	tg := startTarget(t)
	identity, alice, bob, carol := newKey(t), newKey(t), newKey(t), newKey(t)
	srv := startMultiUserServer(t, identity, map[string]string{"alice": alice, "bob": bob}, tg.port(), 300*time.Millisecond)
	sport := srv.Addr().(*net.TCPAddr).Port

	user := func(key, serverKey string) *ClientConfig {
		return &ClientConfig{Common: Common{Key: key, Backend: BackendConfig{Server: "127.0.0.1", Port: sport}}, ServerKey: serverKey}
	}
	for name, key := range map[string]string{"alice": alice, "bob": bob} {
		cli, ok := runClient(t, user(key, identity), 10*time.Second)
		if !ok {
			t.Fatalf("%s got no session", name)
		}
		tn := &tunnel{t: t, cli: cli, srv: srv}
		ectx, ecancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := echoThrough(ectx, tn, 200_000, 5); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ecancel()
	}
	before := srv.Rejected.Load()
	if _, ok := runClient(t, user(carol, identity), 1500*time.Millisecond); ok {
		t.Fatal("a client the server does not know got a session")
	}
	if _, ok := runClient(t, user(alice, ""), 1500*time.Millisecond); ok {
		t.Fatal("a client without an identity hint got a session at a multi-user server")
	}
	if srv.Rejected.Load() < before+2 {
		t.Fatalf("rejections %d → %d, want both refused", before, srv.Rejected.Load())
	}
	if s := srv.Sessions.Load(); s != 2 {
		t.Fatalf("sessions = %d, want alice's and bob's only", s)
	}
}
