package runner

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"usocks/wire"
)

// selfSigned writes a certificate for 127.0.0.1 and usocks.test and its
// key as PEM files; the certificate doubles as the client's CA file.
func selfSigned(t testing.TB) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "usocks.test"},
		DNSNames: []string{"usocks.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// startTLSTunnel runs a client and server with the tls backend.
// Options, if given, change the server's backend section.
func startTLSTunnel(t *testing.T, targetPort int, decoy string, options ...func(*BackendConfig)) (*Server, *Client, func()) {
	cert, key := selfSigned(t)
	logger, _ := testLogger(t)
	psk := newKey(t)
	sln := listenLocal(t)
	sport := sln.Addr().(*net.TCPAddr).Port
	sb := BackendConfig{Type: "tls", Address: "127.0.0.1", Port: sport, TLSCert: cert, TLSKey: key, Decoy: decoy}
	for _, o := range options {
		o(&sb)
	}
	srv, err := NewServer(&ServerConfig{
		Common:   Common{Key: psk, Backend: sb},
		Frontend: FrontendConfig{Server: "127.0.0.1", Port: targetPort},
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv.UseListener(sln)
	cln := listenLocal(t)
	cli, err := NewClient(&ClientConfig{
		Common: Common{Key: psk, Backend: BackendConfig{Type: "tls", Server: "127.0.0.1", Port: sport,
			TLSServerName: "usocks.test", TLSCA: cert}},
		Address: "127.0.0.1", Port: cln.Addr().(*net.TCPAddr).Port,
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	cli.UseListener(cln)
	// A first flight stamped in the second the server started is refused
	// (replay store); the client retries at once.
	cli.Backoff.Min, cli.Backoff.Max = 20*time.Millisecond, 200*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = srv.Run(ctx); done <- struct{}{} }()
	go func() { _ = cli.Run(ctx); done <- struct{}{} }()
	stop := func() { cancel(); <-done; <-done }
	select {
	case <-cli.Sessions:
	case <-time.After(10 * time.Second):
		stop()
		t.Fatal("no session over the tls backend")
	}
	return srv, cli, stop
}

// TestTLSBackend: streams cross a TLS backend byte-exact, and anything
// that is not a usocks client meets a web server serving the decoy page.
func TestTLSBackend(t *testing.T) {
	tg := startTarget(t)
	decoy := filepath.Join(t.TempDir(), "index.html")
	page := "<html><body>nothing to see</body></html>\n"
	if err := os.WriteFile(decoy, []byte(page), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, cli, stop := startTLSTunnel(t, tg.port(), decoy)
	defer stop()
	tn := &tunnel{t: t, cli: cli, srv: srv}
	echoMany(t, tn, 10, 1<<20)

	// A browser (here Go's HTTP client) gets the decoy page.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + srv.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != page {
		t.Fatalf("decoy: %d %q", resp.StatusCode, body)
	}
	// A large request (as long as a usocks flight) still gets a web server.
	req, _ := http.NewRequest("GET", "https://"+srv.Addr().String()+"/missing?"+strings.Repeat("q", 300), nil)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
	// Junk inside TLS gets an HTTP error and a close, never silence.
	c, err := tls.Dial("tcp", srv.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 300)
	_, _ = rand.Read(junk)
	_, _ = c.Write(junk)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(c)
	c.Close()
	if !strings.HasPrefix(string(got), "HTTP/1.1 400") {
		t.Fatalf("junk inside tls: got %q", got)
	}
	if srv.Sessions.Load() != 1 {
		t.Fatalf("sessions = %d, want only the client's", srv.Sessions.Load())
	}
	// curl, if present, sees an ordinary HTTPS site.
	if path, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command(path, "-sk", "--max-time", "10", "https://"+srv.Addr().String()+"/").Output()
		if err != nil || string(out) != page {
			t.Fatalf("curl: %q %v", out, err)
		}
	}
	sum := sha256.Sum256([]byte(page))
	t.Logf("decoy served (sha256 %x)", sum[:4])
}

// TestFETExemptionOfFirstPayloads applies the fully-encrypted-traffic
// rules to first client payloads captured on loopback: the raw backend is
// not exempt, the tls backend is (Ex5), a printable prefix is (Ex2).
func TestFETExemptionOfFirstPayloads(t *testing.T) {
	tg := startTarget(t)
	first := func(prefix string) []byte {
		tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true, prefix: prefix})
		tn.waitSession()
		b := tn.relay.first(0)
		tn.stop()
		return b
	}
	raw := first("")
	if r := wire.FETExemption(raw); r != "" {
		t.Logf("raw first flight exempt by %s (chance: about 0.3%% of flights)", r)
	}
	const prefix = "HTTP/1.1 200 OK\r\n"
	pre := first(prefix)
	if !strings.HasPrefix(string(pre), prefix) || wire.FETExemption(pre) != "Ex2" {
		t.Fatalf("prefixed first flight %q…: %q, want Ex2", pre[:20], wire.FETExemption(pre))
	}
	// The tls backend's first payload is a TLS ClientHello.
	hello := captureHello(t, BackendConfig{Type: "tls"})
	if r := wire.FETExemption(hello); r != "Ex5" {
		t.Fatalf("tls first payload %x…: %q, want Ex5", hello[:8], r)
	}
}

// A server with a prefix refuses a client without it (invalid-input
// reaction), and a client with it works.
func TestPrefixMustMatch(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), prefix: "GET / HTTP/1.1\r\n"})
	tn.waitSession()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 100_000, 2); err != nil {
		t.Fatal(err)
	}
	r, _ := probe(tn.serverAddr(), []byte("GET / HTTP/1.0\r\nHost: x\r\n\r\n"), 3*time.Second)
	if r.bytesBack != 0 || r.how != "FIN" {
		t.Fatalf("wrong prefix: %+v", r)
	}
}

// TestTLSVerificationFailureStops: a certificate that does not verify is
// not retried forever: the client stops with one clear error.
func TestTLSVerificationFailureStops(t *testing.T) {
	cert, key := selfSigned(t)
	logger, logs := testLogger(t)
	psk := newKey(t)
	sln := listenLocal(t)
	srv, err := NewServer(&ServerConfig{
		Common: Common{Key: psk, Backend: BackendConfig{Type: "tls", Address: "127.0.0.1", TLSCert: cert, TLSKey: key}},
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv.UseListener(sln)
	cases := []struct{ name, serverName, want string }{
		{"wrong name", "other.test", "certificate is valid for usocks.test"},
		{"unknown authority", "", "certificate signed by unknown authority"},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cc := &ClientConfig{Common: Common{Key: psk, Backend: BackendConfig{Type: "tls", Server: "127.0.0.1",
				Port: sln.Addr().(*net.TCPAddr).Port, TLSServerName: tc.serverName}}}
			if tc.serverName != "" {
				cc.Backend.TLSCA = cert
			}
			cli, err := NewClient(cc, logger)
			if err != nil {
				t.Fatal(err)
			}
			cli.UseListener(listenLocal(t))
			cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
			defer ccancel()
			err = cli.Run(cctx)
			if cctx.Err() != nil {
				t.Fatal("client still retrying after 20s")
			}
			msg := fmt.Sprint(err)
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "not retrying") || strings.Contains(msg, "tls: tls:") {
				t.Fatalf("error %q", msg)
			}
			for _, e := range logs.AllEntries() {
				if strings.Contains(e.Message, "reconnecting") {
					t.Fatalf("reconnect attempt logged: %s %v", e.Message, e.Data)
				}
			}
		})
	}
}
