package runner

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// startUpstream runs the fallback web server of the tests: cleartext
// HTTP/1.1 and HTTP/2 (prior knowledge) on one loopback port.
func startUpstream(t *testing.T) string {
	ln := listenLocal(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && r.URL.Path != "/about" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Site", "the real one")
		fmt.Fprintf(w, "fallback page %s, %s\n", r.URL.Path, strings.Repeat("x", 3000))
	})
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	// A short header timeout: a usocks client whose first flight met the
	// site (refused in the second the server started) retries soon.
	hs := &http.Server{Handler: mux, Protocols: &protos, ReadHeaderTimeout: time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String()
}

// dumpResponse is a response as a client sees it: protocol, status,
// headers but Date, body.
func dumpResponse(resp *http.Response) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", resp.Proto, resp.Status)
	resp.Header.Del("Date")
	_ = resp.Header.Write(&b)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Fprintf(&b, "\n%s<%v>", body, err)
	return b.String()
}

// TestFallbackIsTheRealSite: with a fallback, every TLS visitor gets the
// fallback's own answers: curl -k and an h2 client see the same responses
// as clients of the fallback itself (Date aside); ALPN offers what the
// fallback serves; the tunnel still works beside it.
func TestFallbackIsTheRealSite(t *testing.T) {
	up := startUpstream(t)
	tg := startTarget(t)
	srv, cli, stop := startTLSTunnel(t, tg.port(), "", func(b *BackendConfig) {
		b.Fallback, b.FallbackALPN = up, []string{"h2", "http/1.1"}
	})
	defer stop()
	addr := srv.Addr().String()

	// Go clients: HTTP/1.1 and HTTP/2 inside TLS against the fallback's
	// own HTTP/1.1 and HTTP/2 (cleartext).
	var h1, h2, h2c http.Protocols
	h1.SetHTTP1(true)
	h2.SetHTTP2(true)
	h2c.SetUnencryptedHTTP2(true)
	insecure := &tls.Config{InsecureSkipVerify: true}
	client := func(p *http.Protocols) *http.Client {
		tr := &http.Transport{TLSClientConfig: insecure, Protocols: p}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Timeout: 10 * time.Second, Transport: tr}
	}
	for _, tc := range []struct {
		name         string
		via, direct  *http.Client
		wantProtocol string
	}{{"http/1.1", client(&h1), client(&h1), "HTTP/1.1"}, {"h2", client(&h2), client(&h2c), "HTTP/2.0"}} {
		for _, path := range []string{"/", "/about", "/missing"} {
			r1, err := tc.via.Get("https://" + addr + path)
			if err != nil {
				t.Fatalf("%s via usocks: %v", tc.name, err)
			}
			r2, err := tc.direct.Get("http://" + up + path)
			if err != nil {
				t.Fatalf("%s direct: %v", tc.name, err)
			}
			if r1.Proto != tc.wantProtocol {
				t.Errorf("%s %s: protocol %s", tc.name, path, r1.Proto)
			}
			if got, want := dumpResponse(r1), dumpResponse(r2); got != want {
				t.Errorf("%s %s:\nvia usocks %q\ndirect     %q", tc.name, path, got, want)
			}
		}
	}

	// curl -k, both protocols, against curl to the fallback itself.
	if curl, err := exec.LookPath("curl"); err == nil {
		run := func(args ...string) string {
			out, err := exec.Command(curl, append([]string{"-sS", "-i", "--max-time", "10"}, args...)...).Output()
			if err != nil {
				t.Fatalf("curl %v: %v", args, err)
			}
			return dateHeader.ReplaceAllString(string(out), "Date: *\r")
		}
		for _, path := range []string{"/", "/missing"} {
			if got, want := run("-k", "--http1.1", "https://"+addr+path), run("--http1.1", "http://"+up+path); got != want {
				t.Errorf("curl http/1.1 %s:\nvia usocks %q\ndirect     %q", path, got, want)
			}
			h2got := run("-k", "--http2", "https://"+addr+path)
			if want := run("--http2-prior-knowledge", "http://"+up+path); h2got != want {
				t.Errorf("curl h2 %s:\nvia usocks %q\ndirect     %q", path, h2got, want)
			}
			if !strings.HasPrefix(h2got, "HTTP/2 ") {
				t.Errorf("curl did not negotiate h2: %q", h2got[:min(len(h2got), 20)])
			}
		}
	} else if os.Getenv("CI") == "true" {
		t.Fatal("curl is not installed")
	}

	// Plain HTTP to the TLS port gets what nginx sends there.
	plain := rawExchange(t, addr, false, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(plain, "HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n") || !strings.Contains(plain, "The plain HTTP request was sent to HTTPS port") {
		t.Errorf("plain HTTP: %q", plain)
	}

	tn := &tunnel{t: t, cli: cli, srv: srv}
	echoMany(t, tn, 4, 256<<10)
	if got := srv.Sessions.Load(); got != 1 {
		t.Errorf("sessions = %d, want only the client's", got)
	}
}

// tlsReaction is what a prober sees after its bytes inside TLS: the bytes
// back (Date aside) and how the connection ended.
func tlsReaction(addr string, useTLS bool, payload []byte) string {
	c, err := dialVisitor(addr, useTLS)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	_, _ = c.Write(payload)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	got, err := io.ReadAll(c)
	// How the close comes (FIN, close_notify, reset) is the TLS front's
	// business; that it comes, and when, is the site's.
	how := "closed"
	if errors.Is(err, os.ErrDeadlineExceeded) {
		how = "open"
	}
	return dateHeader.ReplaceAllString(string(got), "Date: *\r") + "<" + how + ">"
}

// TestProberInsideTLSSeesOneClass: the prober's probes sent inside TLS
// (after the handshake) to a server with a fallback get exactly what the
// same bytes get from the fallback itself: one class, the web site's.
func TestProberInsideTLSSeesOneClass(t *testing.T) {
	up := startUpstream(t)
	tg := startTarget(t)
	srv, _, stop := startTLSTunnel(t, tg.port(), "", func(b *BackendConfig) { b.Fallback = up })
	defer stop()
	var probes [][]byte
	// Random bytes of many lengths (inside TLS they arrive in several
	// records: the site answers the first part and closes while the rest
	// still comes), HTTP requests, NULs.
	for _, n := range append(seq(1, 40), 59, 60, 107, 108, 109, 221, 500, 1000, 1407, 2000, 4000, 5000, 8000) {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		probes = append(probes, b)
	}
	long := "GET /?" + strings.Repeat("a", 300) + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	probes = append(probes, []byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), []byte(long),
		[]byte("GET / HTTP/1.0\r\n\r\n"), []byte("HELLO\r\n\r\n"), bytes.Repeat([]byte{0}, 200))
	got, want := make([]string, len(probes)), make([]string, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(2)
		go func() { defer wg.Done(); got[i] = tlsReaction(srv.Addr().String(), true, p) }()
		go func() { defer wg.Done(); want[i] = tlsReaction(up, false, p) }()
	}
	wg.Wait()
	same := 0
	for i := range probes {
		if got[i] == want[i] {
			same++
		} else {
			t.Errorf("probe %d (%d bytes):\nvia usocks %q\nfallback   %q", i, len(probes[i]), got[i], want[i])
		}
	}
	t.Logf("%d probes, %d answered as the fallback answers them", len(probes), same)
	if srv.Sessions.Load() != 1 {
		t.Errorf("sessions = %d", srv.Sessions.Load())
	}
}
