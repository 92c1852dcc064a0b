package runner

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// Live reload: a server and a client run from config files that the test
// rewrites, then reloads.

// confFile is a config file a test rewrites between reloads.
type confFile string

func newConfFile(t *testing.T, text string) confFile {
	t.Helper()
	f := confFile(filepath.Join(t.TempDir(), "usocks.yaml"))
	f.write(t, text)
	return f
}

func (f confFile) write(t *testing.T, text string) {
	t.Helper()
	if err := os.WriteFile(string(f), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f confFile) load() (*Config, error) { return LoadConfig(string(f)) }

// startFileServer runs the server section of text until the test ends;
// text is a format with one %d, the server's port.
func startFileServer(t *testing.T, text string) (*Server, confFile, *test.Hook, int) {
	t.Helper()
	logger, hook := testLogger(t)
	ln := listenLocal(t)
	port := ln.Addr().(*net.TCPAddr).Port
	f := newConfFile(t, fmt.Sprintf(text, port))
	c, err := f.load()
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := runServerOn(t, c.Server, logger, ln)
	return srv, f, hook, port
}

// startFileClient runs the client section of text (a format taking the
// server's port) and waits for its first session.
func startFileClient(t *testing.T, text string, port int) (*Client, confFile) {
	t.Helper()
	f := newConfFile(t, fmt.Sprintf(text, port))
	c, err := f.load()
	if err != nil {
		t.Fatal(err)
	}
	cli, ok := runClient(t, c.Client, 10*time.Second)
	if !ok {
		t.Fatal("client got no session")
	}
	f.write(t, withPort(fmt.Sprintf(text, port), c.Client.Port)) // runClient chose it
	return cli, f
}

// reloadOK reloads and fails the test on a refusal.
func reloadOK(t *testing.T, reload func(ConfigLoader) (*ReloadReport, error), f confFile, text string) *ReloadReport {
	t.Helper()
	f.write(t, text)
	rep, err := reload(f.load)
	if err != nil {
		t.Fatalf("reload refused: %v", err)
	}
	return rep
}

// hashedEcho is a stream through the tunnel whose every byte is SHA-256
// checked: what the app sends, the echo target sends back.
type hashedEcho struct {
	c       net.Conn
	n       int
	out, in hash.Hash
}

func newHashedEcho(t *testing.T, tn *tunnel) *hashedEcho {
	t.Helper()
	return echoOver(tn.dial(modeEcho))
}

// echoOver checks the echo on c, a stream already connected to the echo
// target.
func echoOver(c net.Conn) *hashedEcho {
	return &hashedEcho{c: c, out: sha256.New(), in: sha256.New()}
}

// round sends n random bytes and reads their echo.
func (h *hashedEcho) round(t *testing.T, n int) {
	t.Helper()
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	h.out.Write(buf)
	errc := make(chan error, 1)
	go func() { _, err := h.c.Write(buf); errc <- err }()
	_ = h.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got := make([]byte, n)
	if _, err := io.ReadFull(h.c, got); err != nil {
		t.Fatalf("echo after %d bytes: %v", h.n, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	h.in.Write(got)
	h.n += n
}

// finish half-closes, expects the clean end and compares the digests.
func (h *hashedEcho) finish(t *testing.T) {
	t.Helper()
	_ = h.c.(*net.TCPConn).CloseWrite()
	if n, err := io.Copy(io.Discard, h.c); n != 0 || err != nil {
		t.Fatalf("after the echo: %d more bytes, %v", n, err)
	}
	_ = h.c.Close()
	if a, b := h.out.Sum(nil), h.in.Sum(nil); string(a) != string(b) {
		t.Fatalf("sha256 of the %d bytes sent %x, of those received %x", h.n, a, b)
	}
}

// withPort adds the client's listen port to a client config text, so
// that a reload does not see it change.
func withPort(text string, port int) string {
	return strings.Replace(text, "client:\n", fmt.Sprintf("client:\n  port: %d\n", port), 1)
}

const reloadServer = `server:
  key: %s
  backend: {address: 127.0.0.1, port: %%d}
  frontend: {server: 127.0.0.1, port: %d}
  probe_timeout: 300ms
  max_streams: %d
`

const reloadClient = `client:
  key: %s
  address: 127.0.0.1
  backend: {server: 127.0.0.1, port: %%d}
  max_streams: %d
`

// TestReloadDuringTransfer: a transfer runs across reloads of both sides
// (stream limits, defence, the key) and completes byte-exact; new streams
// of the running session follow the new limit; new sessions need the new
// key, and the running one keeps its own.
func TestReloadDuringTransfer(t *testing.T) {
	tg := startTarget(t)
	k1, k2 := newKey(t), newKey(t)
	srvText := func(key string, maxStreams int) string {
		return fmt.Sprintf(reloadServer, key, tg.port(), maxStreams)
	}
	srv, sf, hook, port := startFileServer(t, srvText(k1, 100))
	cliText := func(key string, maxStreams int) string { return fmt.Sprintf(reloadClient, key, maxStreams) }
	cli, cf := startFileClient(t, cliText(k1, 100), port)
	tn := &tunnel{t: t, cli: cli, srv: srv}

	h := newHashedEcho(t, tn)
	h.round(t, 1<<20)
	rep := reloadOK(t, srv.Reload, sf, strings.Replace(fmt.Sprintf(srvText(k2, 1), port), "probe_timeout: 300ms", "probe_timeout: 300ms\n  defense: light", 1))
	if want := []string{"server.defense", "server.key", "server.max_streams"}; !slices.Equal(rep.Changed, want) || len(rep.Restart) != 0 {
		t.Fatalf("server reload: changed %v, restart %v; want %v and none", rep.Changed, rep.Restart, want)
	}
	h.round(t, 1<<20) // the running stream goes on, under the old key
	// The running session keeps its limit; a new session gets the new one.
	second := newHashedEcho(t, tn)
	second.round(t, 1000)
	second.finish(t)
	rep = reloadOK(t, cli.Reload, cf, withPort(fmt.Sprintf(cliText(k2, 2), port), cli.cfg().Port))
	if want := []string{"client.key", "client.max_streams"}; !slices.Equal(rep.Changed, want) {
		t.Fatalf("client reload: changed %v, want %v", rep.Changed, want)
	}
	h.round(t, 1<<20)
	h.finish(t)
	if got := srv.Sessions.Load(); got != 1 {
		t.Fatalf("sessions = %d, want the one session throughout", got)
	}
	// A new session: a client with the old key is refused, one with the
	// new key gets the server's new limit of one stream.
	if _, ok := runClient(t, &ClientConfig{Common: Common{Key: k1, Backend: BackendConfig{Server: "127.0.0.1", Port: port}}}, 1500*time.Millisecond); ok {
		t.Fatal("a client with the old key got a new session")
	}
	fresh, ok := runClient(t, &ClientConfig{Common: Common{Key: k2, Backend: BackendConfig{Server: "127.0.0.1", Port: port}}}, 10*time.Second)
	if !ok {
		t.Fatal("a client with the new key got no session")
	}
	ftn := &tunnel{t: t, cli: fresh, srv: srv}
	hold := ftn.dial(modeHold)
	defer hold.Close()
	waitFor(t, "the held stream", 5*time.Second, func() bool { return tg.accepted.Load() >= 3 })
	ftn.expectReset("a second stream over the reloaded max_streams: 1")
	var reloaded int
	for _, e := range hook.AllEntries() {
		if e.Message == "config reloaded" {
			reloaded++
			if strings.Contains(fmt.Sprint(e.Data), k2) {
				t.Fatal("the reload log shows the key")
			}
		}
	}
	if reloaded != 1 {
		t.Fatalf("%d \"config reloaded\" lines on the server, want 1", reloaded)
	}
}

// TestReloadUsers: a user added by a reload connects; a removed user's
// running session is ended and it cannot start a new one; the others go
// on undisturbed.
func TestReloadUsers(t *testing.T) {
	tg := startTarget(t)
	identity, alice, bob, carol := newKey(t), newKey(t), newKey(t), newKey(t)
	text := func(users ...string) string {
		s := fmt.Sprintf("server:\n  key: %s\n  backend: {address: 127.0.0.1, port: %%d}\n  frontend: {server: 127.0.0.1, port: %d}\n  probe_timeout: 300ms\n  clients:\n", identity, tg.port())
		for i := 0; i < len(users); i += 2 {
			s += fmt.Sprintf("    %s: %s\n", users[i], users[i+1])
		}
		return s
	}
	srv, sf, hook, port := startFileServer(t, text("alice", alice, "bob", bob))
	user := func(key string) *ClientConfig {
		return &ClientConfig{Common: Common{Key: key, Backend: BackendConfig{Server: "127.0.0.1", Port: port}}, ServerKey: identity}
	}
	if _, ok := runClient(t, user(carol), 1500*time.Millisecond); ok {
		t.Fatal("carol got a session before she was added")
	}
	aliceCli, ok := runClient(t, user(alice), 10*time.Second)
	if !ok {
		t.Fatal("alice got no session")
	}
	bobCli, ok := runClient(t, user(bob), 10*time.Second)
	if !ok {
		t.Fatal("bob got no session")
	}
	bobStream := newHashedEcho(t, &tunnel{t: t, cli: bobCli, srv: srv})
	bobStream.round(t, 100_000)

	rep := reloadOK(t, srv.Reload, sf, fmt.Sprintf(text("bob", bob, "carol", carol), port))
	if want := []string{"server.clients.alice", "server.clients.carol"}; !slices.Equal(rep.Changed, want) || rep.Ended != 1 {
		t.Fatalf("changed %v, ended %d; want %v and alice's one session", rep.Changed, rep.Ended, want)
	}
	sf.write(t, fmt.Sprintf(text("bob", bob, "carol", carol, "dave", "too short"), port))
	if _, err := srv.Reload(sf.load); err == nil || !strings.HasPrefix(err.Error(), "server.clients.dave") {
		t.Fatalf("reload with a bad user key: %v; want it refused, naming server.clients.dave", err)
	}
	if _, ok := runClient(t, user(carol), 10*time.Second); !ok {
		t.Fatal("carol, added by the reload, got no session")
	}
	// Alice's client notices the end and tries again, in vain.
	waitFor(t, "alice's session to end", 10*time.Second, func() bool { return aliceCli.Reconnects.Load() > 0 })
	select {
	case <-aliceCli.Sessions:
		t.Fatal("alice, removed, got a new session")
	case <-time.After(1500 * time.Millisecond):
	}
	if _, ok := runClient(t, user(alice), 1500*time.Millisecond); ok {
		t.Fatal("a new client with alice's removed key got a session")
	}
	bobStream.round(t, 100_000)
	bobStream.finish(t)
	var named bool
	for _, e := range hook.AllEntries() {
		if e.Message == "session established" && e.Data["user"] == "carol" {
			named = true
		}
	}
	if !named {
		t.Fatal("carol's session is not logged with user=carol")
	}
}

// TestReloadRefusesBadConfig: a file that does not parse or validate is
// refused with its YAML path; the running config stays and keeps working;
// the metrics say so.
func TestReloadRefusesBadConfig(t *testing.T) {
	tg := startTarget(t)
	key := newKey(t)
	good := fmt.Sprintf(reloadServer, key, tg.port(), 100) + "  metrics: 127.0.0.1:0\n"
	srv, sf, hook, port := startFileServer(t, good)
	cli, _ := startFileClient(t, fmt.Sprintf(reloadClient, key, 100), port)
	tn := &tunnel{t: t, cli: cli, srv: srv}
	for _, tc := range []struct{ text, path string }{
		{strings.Replace(good, "max_streams: 100", "max_streams: 70000", 1), "server.max_streams"},
		{strings.Replace(good, "max_streams: 100", "max_streams: [1]", 1), "server.max_streams"},
		{strings.Replace(good, "max_streams: 100", "max_stream: 100", 1), "server.max_stream"},
		{strings.Replace(good, "max_streams: 100", "idle_timeout: 10", 1), "server.idle_timeout"},
		{"server: [\n", "config"},
		{"client:\n  key: " + key + "\n", "server"},
	} {
		hook.Reset()
		if strings.Contains(tc.text, "%d") {
			tc.text = fmt.Sprintf(tc.text, port)
		}
		sf.write(t, tc.text)
		_, err := srv.Reload(sf.load)
		if err == nil || !strings.HasPrefix(err.Error(), tc.path) {
			t.Fatalf("reload of a bad file: %v; want an error about %s", err, tc.path)
		}
		// Other goroutines (the previous round's backend stages) log
		// concurrently, so look for the refusal among all entries
		// since the reset rather than at the end.
		refused := false
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.ErrorLevel && strings.Contains(fmt.Sprint(e.Data["error"]), tc.path) {
				refused = true
			}
		}
		if !refused {
			t.Fatalf("log entries %+v; want an error naming %s", hook.AllEntries(), tc.path)
		}
		h := newHashedEcho(t, tn)
		h.round(t, 50_000)
		h.finish(t)
	}
	if srv.cfg().MaxStreams != 100 {
		t.Fatalf("max_streams %d after refused reloads", srv.cfg().MaxStreams)
	}
	fams := scrape(t, srv.MetricsAddr())
	if v, _ := value(fams, "usocks_config_last_reload_successful", nil); v != 0 {
		t.Fatalf("usocks_config_last_reload_successful = %v after a refusal, want 0", v)
	}
	if v, _ := value(fams, "usocks_config_reloads_total", map[string]string{"result": "refused"}); v != 6 {
		t.Fatalf("refused reloads = %v, want 6", v)
	}
	reloadOK(t, srv.Reload, sf, fmt.Sprintf(good, port))
	fams = scrape(t, srv.MetricsAddr())
	if v, _ := value(fams, "usocks_config_last_reload_successful", nil); v != 1 {
		t.Fatalf("usocks_config_last_reload_successful = %v after a good reload, want 1", v)
	}
}

// socksOpen asks the socks5 frontend through proxy for 127.0.0.1:port
// and returns the connection and the reply code (0: connected).
func socksOpen(t *testing.T, proxy string, port int) (net.Conn, byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(socksConnect("127.0.0.1", uint16(port))); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 2+10) // method choice, then the reply with an IPv4 address
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, reply); err != nil {
		t.Fatalf("socks5 reply %x: %v", reply, err)
	}
	return c, reply[3]
}

// TestReloadAccessRules: new streams of a running session follow the
// access rules in force when they open; a stream opened before a reload
// that denies its target goes on.
func TestReloadAccessRules(t *testing.T) {
	tg := startTarget(t)
	key := newKey(t)
	text := func(rules string) string {
		return fmt.Sprintf("server:\n  key: %s\n  backend: {address: 127.0.0.1, port: %%d}\n  frontend:\n    type: socks5\n    udp: false\n%s", key, rules)
	}
	srv, sf, _, port := startFileServer(t, text(""))
	cli, _ := startFileClient(t, fmt.Sprintf(reloadClient, key, 100), port)
	proxy := cli.Addr().String()
	c, rep := socksOpen(t, proxy, tg.port())
	_ = c.Close()
	if rep == 0 {
		t.Fatal("loopback reached under the default deny")
	}
	reloadOK(t, srv.Reload, sf, fmt.Sprintf(text("    allow: [127.0.0.1/32]\n"), port))
	c, rep = socksOpen(t, proxy, tg.port())
	defer c.Close()
	if rep != 0 {
		t.Fatalf("allowed by the reload, refused with %d", rep)
	}
	if _, err := c.Write([]byte{modeEcho}); err != nil {
		t.Fatal(err)
	}
	h := echoOver(c)
	h.round(t, 300_000)
	reloadOK(t, srv.Reload, sf, fmt.Sprintf(text("    allow: [127.0.0.0/8]\n    deny: [127.0.0.1/32]\n"), port))
	c2, rep := socksOpen(t, proxy, tg.port())
	_ = c2.Close()
	if rep == 0 {
		t.Fatal("a new stream reached a target the reload denied")
	}
	h.round(t, 300_000) // the stream opened before goes on
	h.finish(t)
	if got := srv.Sessions.Load(); got != 1 {
		t.Fatalf("sessions = %d, want 1", got)
	}
}

// TestReloadRestartOnlyKeys: keys that need a restart are named and keep
// their running values; the rest applies.
func TestReloadRestartOnlyKeys(t *testing.T) {
	tg := startTarget(t)
	key := newKey(t)
	text := fmt.Sprintf(reloadServer, key, tg.port(), 100)
	srv, sf, hook, port := startFileServer(t, text)
	changed := strings.Replace(fmt.Sprintf(text, port), fmt.Sprintf("port: %d}\n  frontend", port), fmt.Sprintf("port: %d}\n  frontend", port+1), 1)
	changed = strings.Replace(changed, "max_streams: 100", "max_streams: 7\n  replay_window: 40s\n  resume_timeout: 5s\n  log_level: warn", 1)
	rep := reloadOK(t, srv.Reload, sf, changed)
	if want := []string{"server.backend.port", "server.replay_window", "server.resume_timeout"}; !slices.Equal(rep.Restart, want) {
		t.Fatalf("restart %v, want %v", rep.Restart, want)
	}
	if want := []string{"server.log_level", "server.max_streams"}; !slices.Equal(rep.Changed, want) {
		t.Fatalf("changed %v, want %v", rep.Changed, want)
	}
	if c := srv.cfg(); c.Backend.Port != port || c.ReplayWindow != 30*time.Second || c.MaxStreams != 7 {
		t.Fatalf("in force: port %d, replay_window %v, max_streams %d", c.Backend.Port, c.ReplayWindow, c.MaxStreams)
	}
	var warned bool
	for _, e := range hook.AllEntries() {
		warned = warned || (e.Level == logrus.WarnLevel && e.Data["keys"] == "server.backend.port, server.replay_window, server.resume_timeout")
	}
	if !warned {
		t.Fatal("no warning naming the keys that need a restart")
	}
	if lv := srv.log.Logger.GetLevel(); lv != logrus.WarnLevel {
		t.Fatalf("log level %v after log_level: warn", lv)
	}
	reloadOK(t, srv.Reload, sf, fmt.Sprintf(text, port))
	if lv := srv.log.Logger.GetLevel(); lv != logrus.DebugLevel {
		t.Fatalf("log level %v after log_level was removed, want the start level", lv)
	}
}

// TestReloadClientKey: a client reloaded with another user's key keeps its
// running session; when the server then removes its old user, that
// session ends and the next one starts with the new key.
func TestReloadClientKey(t *testing.T) {
	tg := startTarget(t)
	identity, alice, bob := newKey(t), newKey(t), newKey(t)
	srvText := func(users string) string {
		return fmt.Sprintf("server:\n  key: %s\n  backend: {address: 127.0.0.1, port: %%d}\n  frontend: {server: 127.0.0.1, port: %d}\n  probe_timeout: 300ms\n  clients: {%s}\n", identity, tg.port(), users)
	}
	srv, sf, hook, port := startFileServer(t, srvText("alice: "+alice+", bob: "+bob))
	cliText := func(key string) string {
		return fmt.Sprintf("client:\n  key: %s\n  server_key: %s\n  address: 127.0.0.1\n  backend: {server: 127.0.0.1, port: %%d}\n", key, identity)
	}
	cli, cf := startFileClient(t, cliText(alice), port)
	tn := &tunnel{t: t, cli: cli, srv: srv}
	h := newHashedEcho(t, tn)
	h.round(t, 100_000)
	rep := reloadOK(t, cli.Reload, cf, withPort(fmt.Sprintf(cliText(bob), port), cli.cfg().Port))
	if !slices.Equal(rep.Changed, []string{"client.key"}) {
		t.Fatalf("client reload changed %v", rep.Changed)
	}
	h.round(t, 100_000)
	h.finish(t)
	reloadOK(t, srv.Reload, sf, fmt.Sprintf(srvText("bob: "+bob), port))
	select {
	case <-cli.Sessions:
	case <-time.After(10 * time.Second):
		t.Fatal("no new session after the old user was removed")
	}
	h = newHashedEcho(t, tn)
	h.round(t, 100_000)
	h.finish(t)
	var users []string
	for _, e := range entries(hook.AllEntries(), "session established", "side", "server") {
		users = append(users, fmt.Sprint(e.Data["user"]))
	}
	if !slices.Equal(users, []string{"alice", "bob"}) {
		t.Fatalf("sessions of %v, want alice's then bob's", users)
	}
}

// TestReloadCertificate: a reload reads the certificate files again (a
// renewal in place, or other files): new TLS connections get the new
// certificate; files that do not load are refused and the old
// certificate stays.
func TestReloadCertificate(t *testing.T) {
	tg := startTarget(t)
	certA, keyA := selfSigned(t)
	certB, keyB := selfSigned(t)
	key0 := newKey(t)
	text := func(cert, key string) string {
		return fmt.Sprintf("server:\n  key: %s\n  backend: {type: tls, address: 127.0.0.1, port: %%d, tls_cert: %s, tls_key: %s}\n  frontend: {server: 127.0.0.1, port: %d}\n",
			key0, cert, key, tg.port())
	}
	srv, sf, _, port := startFileServer(t, text(certA, keyA))
	pinOf := func(file string) string {
		c, err := readCerts(file)
		if err != nil {
			t.Fatal(err)
		}
		return CertPin(c[0])
	}
	served := func() string {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", srv.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return CertPin(c.ConnectionState().PeerCertificates[0])
	}
	if got := served(); got != pinOf(certA) {
		t.Fatal("not serving the first certificate")
	}
	rep := reloadOK(t, srv.Reload, sf, fmt.Sprintf(text(certB, keyB), port))
	if !slices.Equal(rep.Changed, []string{"server.backend.tls_cert", "server.backend.tls_key"}) || len(rep.Restart) != 0 {
		t.Fatalf("changed %v, restart %v", rep.Changed, rep.Restart)
	}
	if got := served(); got != pinOf(certB) {
		t.Fatal("a new connection after the reload did not get the new certificate")
	}
	sf.write(t, fmt.Sprintf(text(certA, keyB), port)) // a key that is not the certificate's
	if _, err := srv.Reload(sf.load); err == nil || !strings.HasPrefix(err.Error(), "server.backend.tls_cert") {
		t.Fatalf("reload with a mismatched key: %v", err)
	}
	if got := served(); got != pinOf(certB) {
		t.Fatal("a refused reload changed the certificate")
	}
}
