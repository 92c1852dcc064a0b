package runner

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTLSPinnedLink: a server with a self-signed certificate hands out a
// link; a client run from that link alone (no CA file) verifies the
// server by the pin and moves data byte-exact. A client whose pin names
// another key stops at once with a clear error.
func TestTLSPinnedLink(t *testing.T) {
	tg := startTarget(t)
	cert, key := selfSigned(t)
	logger, hook := testLogger(t)
	sln := listenLocal(t)
	scfg := &ServerConfig{
		Common:   Common{Key: newKey(t), Backend: BackendConfig{Type: "tls", Address: "127.0.0.1", Port: sln.Addr().(*net.TCPAddr).Port, TLSCert: cert, TLSKey: key}},
		Frontend: FrontendConfig{Server: "127.0.0.1", Port: tg.port()},
	}
	if err := scfg.Validate(); err != nil {
		t.Fatal(err)
	}
	link, err := ServerLink(scfg, "127.0.0.1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(link, "tls_pin=") {
		t.Fatalf("a self-signed server's link carries no pin: %s", link)
	}
	file := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(file, fmt.Appendf(nil, "server:\n  key: %s\n  backend: {type: tls, tls_cert: %s, tls_key: %s}\n", newKey(t), cert, key), 0o600); err != nil {
		t.Fatal(err)
	}
	if r, err := CheckConfig(file); err != nil || len(r.Sections) != 1 || !strings.HasSuffix(r.Sections[0], ", tls_pin "+pinOfLink(t, link)) {
		t.Fatalf("usocks check does not show the pin: %+v %v", r, err)
	}
	srv, _ := runServerOn(t, scfg, logger, sln)
	ccfg, _, err := ParseLink(link)
	if err != nil {
		t.Fatal(err)
	}
	if ccfg.Backend.TLSCA != "" {
		t.Fatal("the link set a CA file")
	}
	cli, ok := runClient(t, ccfg, 10*time.Second)
	if !ok {
		t.Fatal("the client run from the link got no session")
	}
	h := newHashedEcho(t, &tunnel{t: t, cli: cli, srv: srv})
	h.round(t, 1<<20)
	h.finish(t)
	var logged bool
	for _, e := range hook.AllEntries() {
		logged = logged || (e.Message == "server started" && e.Data["tls_pin"] == ccfg.Backend.TLSPin)
	}
	if !logged {
		t.Fatal("the server does not log its tls_pin at start")
	}

	// Another key's pin: the client stops, without retrying.
	other, _ := selfSigned(t)
	certs, err := readCerts(other)
	if err != nil {
		t.Fatal(err)
	}
	bad, _, err := ParseLink(strings.Replace(link, ccfg.Backend.TLSPin, CertPin(certs[0]), 1))
	if err != nil {
		t.Fatal(err)
	}
	bad.Address, bad.Port = "127.0.0.1", 0
	wrong, err := NewClient(bad, logger)
	if err != nil {
		t.Fatal(err)
	}
	wrong.UseListener(listenLocal(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = wrong.Run(ctx)
	if ctx.Err() != nil || err == nil || !strings.Contains(err.Error(), "tls_pin") || !strings.Contains(err.Error(), "not retrying") {
		t.Fatalf("wrong pin: %v (after %v)", err, ctx.Err())
	}
	if got := srv.Sessions.Load(); got != 1 {
		t.Fatalf("sessions = %d, want only the pinned client's", got)
	}
}

// pinOfLink is the tls_pin parameter of a link.
func pinOfLink(t *testing.T, link string) string {
	t.Helper()
	c, _, err := ParseLink(link)
	if err != nil {
		t.Fatal(err)
	}
	return c.Backend.TLSPin
}

// TestTLSPinConfig: tls_pin is checked like every key.
func TestTLSPinConfig(t *testing.T) {
	const pin = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
	for _, tc := range []struct {
		name string
		b    BackendConfig
		want string // "" ok
	}{
		{"pin", BackendConfig{Type: "tls", TLSPin: pin}, ""},
		{"short", BackendConfig{Type: "tls", TLSPin: pin[:40]}, "client.backend.tls_pin: want the SHA-256"},
		{"not tls", BackendConfig{TLSPin: pin}, "client.backend.tls_pin: only for backend type tls"},
		{"with a CA", BackendConfig{Type: "tls", TLSPin: pin, TLSCA: "ca.pem"}, "client.backend.tls_pin: give tls_pin or tls_ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &ClientConfig{Common: Common{Key: linkTestKey, Backend: tc.b}}
			err := c.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
		})
	}
}
