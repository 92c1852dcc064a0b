package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages/frontend"
)

// End-to-end tests of the socks5 and http frontends: real curl, through a
// real tunnel, to a local HTTP server. Only loopback is ever contacted;
// unknown hosts are names under .invalid, which the server's dialer
// answers without any DNS query.

// origin is the HTTP server behind the proxy frontends. /blob/N serves N
// deterministic bytes; /headers lists the request's headers.
type origin struct {
	srv      *httptest.Server
	requests atomic.Int64
}

func startOrigin(t testing.TB) *origin {
	t.Helper()
	o := &origin{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.requests.Add(1)
		switch {
		case strings.HasPrefix(r.URL.Path, "/blob/"):
			n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/blob/"))
			if err != nil || n < 0 || n > 64<<20 {
				http.Error(w, "bad size", 400)
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = w.Write(blob(n))
		case r.URL.Path == "/headers":
			var lines []string
			for k, v := range r.Header {
				lines = append(lines, k+": "+strings.Join(v, ","))
			}
			sort.Strings(lines)
			fmt.Fprintf(w, "Host: %s\n%s\n", r.Host, strings.Join(lines, "\n"))
		case r.URL.Path == "/small":
			_, _ = io.WriteString(w, "hello\n")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) url(path string) string { return o.srv.URL + path }

func (o *origin) hostPort() (string, uint16) {
	ap := netip.MustParseAddrPort(o.srv.Listener.Addr().String())
	return ap.Addr().String(), ap.Port()
}

// blob is n pattern bytes.
func blob(n int) []byte {
	b := make([]byte, n)
	Pattern(b, 11)
	return b
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// requireCurl skips the test when curl is missing.
func requireCurl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not found in PATH: the frontend end-to-end tests drive a real curl (CI installs it via .ci/run)")
	}
}

// curlResult is one curl run.
type curlResult struct {
	out    []byte
	stderr string
	code   int // exit status
}

// runCurl runs curl without any config file or proxy from the environment.
func runCurl(t *testing.T, args ...string) curlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	full := append([]string{"-q", "-sS", "--max-time", "15"}, args...)
	cmd := exec.CommandContext(ctx, "curl", full...)
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasSuffix(strings.ToLower(k), "_proxy") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	r := curlResult{out: out.Bytes(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("curl %v: %v", args, err)
	}
	return r
}

// frontendTunnel starts a tunnel whose server uses fc and waits for it.
func frontendTunnel(t testing.TB, fc FrontendConfig) (*tunnel, string) {
	t.Helper()
	tn := startTunnel(t, tunnelOpts{frontend: &fc})
	tn.waitSession()
	return tn, tn.cli.Addr().String()
}

var loopbackOnly = []string{"127.0.0.0/8", "::1"}

// checkBlob fetches /blob/n with curl args and checks the body's digest.
func checkBlob(t *testing.T, o *origin, n int, args ...string) {
	t.Helper()
	r := runCurl(t, append(args, "--fail", o.url("/blob/"+strconv.Itoa(n)))...)
	if r.code != 0 {
		t.Fatalf("curl %v: exit %d: %s", args, r.code, r.stderr)
	}
	if got, want := digest(r.out), digest(blob(n)); got != want || len(r.out) != n {
		t.Fatalf("curl %v: %d bytes sha256 %s, want %d bytes %s", args, len(r.out), got, n, want)
	}
}

// exchange writes send to the client port and reads until the stream
// ends; reset says whether it ended with an error rather than EOF.
func exchange(t *testing.T, proxy string, send []byte) (got []byte, reset bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(send)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err = io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("no end of stream within 10s after %q", got)
	}
	return got, err != nil
}

func socksConnect(host string, port uint16) []byte {
	atyp := frontend.SocksAtypDomain
	if a, err := netip.ParseAddr(host); err == nil {
		atyp = frontend.SocksAtypIPv4
		if a.Is6() {
			atyp = frontend.SocksAtypIPv6
		}
	}
	return frontend.AppendSocksRequest([]byte{5, 1, 0}, frontend.SocksRequest{Cmd: frontend.SocksCmdConnect, Atyp: atyp, Host: host, Port: port})
}

func socksRefusal(code byte) []byte {
	return append([]byte{5, 0}, frontend.AppendSocksReply(nil, code, netip.AddrPort{})...)
}

func closedLoopbackPort(t *testing.T) uint16 {
	ln := listenLocal(t)
	p := uint16(ln.Addr().(*net.TCPAddr).Port)
	_ = ln.Close()
	return p
}

func TestFrontendSocks5(t *testing.T) {
	requireCurl(t)
	o := startOrigin(t)
	noUDP := false // UDP ASSOCIATE is then refused (udp_e2e_test.go serves it)
	tn, proxy := frontendTunnel(t, FrontendConfig{Type: "socks5", Allow: loopbackOnly, UDP: &noUDP})
	host, _ := o.hostPort()
	for _, n := range []int{0, 1, 100_000, 3 << 20} {
		checkBlob(t, o, n, "--socks5-hostname", proxy)
	}
	checkBlob(t, o, 70_000, "--socks5", proxy)
	checkBlob(t, o, 70_000, "-x", "socks5h://"+proxy)

	// Error paths, byte for byte.
	closed := closedLoopbackPort(t)
	cases := []struct {
		name string
		send []byte
		want []byte
	}{
		{"refused", socksConnect("127.0.0.1", closed), socksRefusal(frontend.SocksConnRefused)},
		{"unknown host", socksConnect("no-such-host.invalid", 80), socksRefusal(frontend.SocksHostUnreachable)},
		{"bind", []byte{5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80}, socksRefusal(frontend.SocksCmdNotSupported)},
		{"udp associate with udp: false", []byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}, socksRefusal(frontend.SocksCmdNotSupported)},
		{"address type 9", []byte{5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, socksRefusal(frontend.SocksAtypNotSupported)},
		{"bad domain", append([]byte{5, 1, 0, 5, 1, 0, 3, 3, 'a', ' ', 'b'}, 0, 80), socksRefusal(frontend.SocksHostUnreachable)},
		{"user/pass not offered", []byte{5, 1, 2}, []byte{5, 0xff}},
	}
	for _, c := range cases {
		got, reset := exchange(t, proxy, c.send)
		if !bytes.Equal(got, c.want) || reset {
			t.Errorf("%s: got %x (reset %v), want %x and a clean close", c.name, got, reset, c.want)
		}
	}
	// Not SOCKS5 at all: the stream is closed without a word.
	for _, junk := range [][]byte{{4, 1, 0, 80, 127, 0, 0, 1, 0}, []byte("GET / HTTP/1.1\r\n\r\n")} {
		if got, _ := exchange(t, proxy, junk); len(got) != 0 {
			t.Errorf("%q: got %x, want nothing", junk, got)
		}
	}
	// A refused socks5 request through curl.
	r := runCurl(t, "--socks5-hostname", proxy, fmt.Sprintf("http://%s:%d/", host, closed))
	if r.code == 0 {
		t.Errorf("curl to a refused port succeeded")
	}
	if got := tn.srv.Sessions.Load(); got != 1 {
		t.Errorf("sessions = %d, want 1", got)
	}
}

func TestFrontendSocks5Auth(t *testing.T) {
	requireCurl(t)
	o := startOrigin(t)
	_, proxy := frontendTunnel(t, FrontendConfig{Type: "socks5", Allow: loopbackOnly, Users: map[string]string{"alice": "s3cret pass"}})
	checkBlob(t, o, 200_000, "--socks5", proxy, "--proxy-user", "alice:s3cret pass")
	checkBlob(t, o, 1000, "-x", "socks5h://alice:s3cret%20pass@"+proxy)
	before := o.requests.Load()
	r := runCurl(t, "--socks5", proxy, "--proxy-user", "alice:wrong", o.url("/small"))
	if r.code == 0 {
		t.Errorf("wrong password: curl succeeded: %q", r.out)
	}
	if r = runCurl(t, "--socks5", proxy, o.url("/small")); r.code == 0 {
		t.Errorf("no password: curl succeeded: %q", r.out)
	}
	if o.requests.Load() != before {
		t.Errorf("the origin was reached without valid credentials")
	}
	// RFC 1929 failure, byte for byte: method 2 chosen, status 1, close.
	send := append([]byte{5, 1, 2, 1, 5}, "alice\x05wrong"...)
	if got, reset := exchange(t, proxy, send); !bytes.Equal(got, []byte{5, 2, 1, 1}) || reset {
		t.Errorf("wrong password: got %x (reset %v), want 05020101 and a clean close", got, reset)
	}
	if got, _ := exchange(t, proxy, []byte{5, 1, 0}); !bytes.Equal(got, []byte{5, 0xff}) {
		t.Errorf("no-auth offered to a server with users: got %x, want 05ff", got)
	}
}

func TestFrontendDefaultDeny(t *testing.T) {
	requireCurl(t)
	o := startOrigin(t)
	host, port := o.hostPort()
	_, socks := frontendTunnel(t, FrontendConfig{Type: "socks5"})
	if got, _ := exchange(t, socks, socksConnect(host, port)); !bytes.Equal(got, socksRefusal(frontend.SocksNotAllowed)) {
		t.Errorf("socks5 to loopback: got %x, want reply 2", got)
	}
	// "localhost" resolves (from /etc/hosts) to a denied address.
	if got, _ := exchange(t, socks, socksConnect("localhost", port)); !bytes.Equal(got, socksRefusal(frontend.SocksNotAllowed)) {
		t.Errorf("socks5 to localhost: got %x, want reply 2", got)
	}
	_, hp := frontendTunnel(t, FrontendConfig{Type: "http", Deny: []string{"192.0.2.0/24"}})
	r := runCurl(t, "-x", "http://"+hp, "-o", "/dev/null", "-w", "%{http_code}", o.url("/small"))
	if string(r.out) != "403" {
		t.Errorf("http proxy to loopback: %q (exit %d %s), want 403", r.out, r.code, r.stderr)
	}
	r = runCurl(t, "-p", "-x", "http://"+hp, "-o", "/dev/null", "-w", "%{http_connect}", o.url("/small"))
	if string(r.out) != "403" || r.code == 0 {
		t.Errorf("CONNECT to loopback: %q (exit %d %s), want 403", r.out, r.code, r.stderr)
	}
	if n := o.requests.Load(); n != 0 {
		t.Errorf("the origin saw %d requests through a denying frontend", n)
	}
}

func TestFrontendHTTP(t *testing.T) {
	requireCurl(t)
	o := startOrigin(t)
	_, proxy := frontendTunnel(t, FrontendConfig{Type: "http", Allow: loopbackOnly})
	for _, n := range []int{0, 1, 100_000, 3 << 20} {
		checkBlob(t, o, n, "-p", "-x", "http://"+proxy) // CONNECT
		checkBlob(t, o, n, "-x", "http://"+proxy)       // plain GET
	}
	// The plain GET reaches the origin in origin form with a clean head.
	r := runCurl(t, "-x", "http://"+proxy, "-H", "Proxy-Connection: keep-alive", "--fail", o.url("/headers"))
	host, port := o.hostPort()
	if r.code != 0 || !strings.HasPrefix(string(r.out), fmt.Sprintf("Host: %s:%d\n", host, port)) ||
		strings.Contains(string(r.out), "Proxy-") || !strings.Contains(string(r.out), "Connection: close") {
		t.Errorf("headers at the origin: %q (exit %d %s)", r.out, r.code, r.stderr)
	}
	closed := closedLoopbackPort(t)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"refused", []string{"-w", "%{http_code}", fmt.Sprintf("http://%s:%d/", host, closed)}, "502"},
		{"refused CONNECT", []string{"-p", "-w", "%{http_connect}", fmt.Sprintf("http://%s:%d/", host, closed)}, "502"},
		{"unknown host", []string{"-w", "%{http_code}", "http://no-such-host.invalid/"}, "502"},
		{"unknown host CONNECT", []string{"-p", "-w", "%{http_connect}", "http://no-such-host.invalid/"}, "502"},
	} {
		r := runCurl(t, append([]string{"-x", "http://" + proxy, "-o", "/dev/null"}, c.args...)...)
		if string(r.out) != c.want {
			t.Errorf("%s: %q (exit %d %s), want %s", c.name, r.out, r.code, r.stderr, c.want)
		}
	}
	for _, c := range []struct {
		name, send, status string
	}{
		{"malformed", "HELLO\r\n\r\n", "400"},
		{"binary", "\x16\x03\x01\x02\x00", "400"},
		{"origin form", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "400"},
		{"https scheme", "GET https://127.0.0.1/ HTTP/1.1\r\n\r\n", "501"},
		{"trace", "TRACE http://127.0.0.1/ HTTP/1.1\r\n\r\n", "405"},
		{"connect without port", "CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", "400"},
		{"too large", "GET http://127.0.0.1/ HTTP/1.1\r\nX: " + strings.Repeat("x", frontend.MaxHTTPHead) + "\r\n\r\n", "431"},
	} {
		got, reset := exchange(t, proxy, []byte(c.send))
		if !strings.HasPrefix(string(got), "HTTP/1.1 "+c.status+" ") || reset {
			t.Errorf("%s: got %q (reset %v), want status %s and a clean close", c.name, got, reset, c.status)
		}
	}
}

func TestFrontendHTTPAuth(t *testing.T) {
	requireCurl(t)
	o := startOrigin(t)
	_, proxy := frontendTunnel(t, FrontendConfig{Type: "http", Allow: loopbackOnly, Users: map[string]string{"alice": "s3cret"}})
	checkBlob(t, o, 50_000, "-p", "-x", "http://"+proxy, "--proxy-user", "alice:s3cret")
	checkBlob(t, o, 50_000, "-x", "http://alice:s3cret@"+proxy)
	// Credentials stop at the proxy.
	r := runCurl(t, "-x", "http://alice:s3cret@"+proxy, "--fail", o.url("/headers"))
	if r.code != 0 || strings.Contains(string(r.out), "Proxy-Authorization") {
		t.Errorf("headers at the origin: %q (exit %d)", r.out, r.code)
	}
	before := o.requests.Load()
	for _, c := range []struct {
		name string
		args []string
	}{
		{"none", []string{"-w", "%{http_code}"}},
		{"wrong", []string{"--proxy-user", "alice:nope", "-w", "%{http_code}"}},
		{"none CONNECT", []string{"-p", "-w", "%{http_connect}"}},
		{"wrong CONNECT", []string{"-p", "--proxy-user", "alice:nope", "-w", "%{http_connect}"}},
	} {
		r := runCurl(t, append(append([]string{"-x", "http://" + proxy, "-o", "/dev/null"}, c.args...), o.url("/small"))...)
		if string(r.out) != "407" {
			t.Errorf("%s: %q (exit %d %s), want 407", c.name, r.out, r.code, r.stderr)
		}
	}
	got, _ := exchange(t, proxy, []byte("GET "+o.url("/small")+" HTTP/1.1\r\n\r\n"))
	if !strings.HasPrefix(string(got), "HTTP/1.1 407 ") || !strings.Contains(string(got), "\r\nProxy-Authenticate: Basic realm=\"usocks\"\r\n") {
		t.Errorf("407 response: %q", got)
	}
	if o.requests.Load() != before {
		t.Errorf("the origin was reached without valid credentials")
	}
}

func TestFrontendConfig(t *testing.T) {
	base := func(fc FrontendConfig) *ServerConfig {
		return &ServerConfig{Common: Common{Key: "0123456789abcdef-passphrase"}, Frontend: fc}
	}
	bad := []struct {
		fc  FrontendConfig
		key string
	}{
		{FrontendConfig{Type: "socks4"}, "server.frontend.type"},
		{FrontendConfig{Type: "socks5", Allow: []string{"127.0.0.0/8", "::1", "10.0.0.1/8"}}, "server.frontend.allow[2]"},
		{FrontendConfig{Type: "http", Deny: []string{"example.com"}}, "server.frontend.deny[0]"},
		{FrontendConfig{Type: "socks5", Users: map[string]string{}}, "server.frontend.users"},
		{FrontendConfig{Type: "socks5", Users: map[string]string{"a:b": "x"}}, `server.frontend.users["a:b"]`},
		{FrontendConfig{Type: "socks5", Users: map[string]string{"a": ""}}, `server.frontend.users["a"]`},
		{FrontendConfig{Type: "socks5", Users: map[string]string{"a": strings.Repeat("x", 256)}}, `server.frontend.users["a"]`},
		{FrontendConfig{Type: "http", MaxDials: -1}, "server.frontend.max_dials"},
		{FrontendConfig{Type: "http", DialTimeout: -time.Second}, "server.frontend.dial_timeout"},
		{FrontendConfig{Allow: []string{"127.0.0.0/8"}}, "server.frontend.allow"},
		{FrontendConfig{Type: "redirect", Users: map[string]string{"a": "b"}}, "server.frontend.users"},
		{FrontendConfig{Type: "redirect", MaxDials: 3}, "server.frontend.max_dials"},
	}
	for _, c := range bad {
		err := base(c.fc).Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != c.key {
			t.Errorf("%+v: %v, want an error for %s", c.fc, err, c.key)
		}
	}
	good := base(FrontendConfig{Type: "socks5", Allow: []string{"[::1]/128:22"}, Users: map[string]string{"a": "b"}})
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	if good.Frontend.MaxDials != frontend.DefaultMaxDials || good.Frontend.DialTimeout != frontend.DefaultDialTimeout {
		t.Errorf("defaults: max_dials %d dial_timeout %v", good.Frontend.MaxDials, good.Frontend.DialTimeout)
	}
	if err := good.Validate(); err != nil {
		t.Errorf("second Validate: %v", err)
	}
	yml := `
server:
  key: "0123456789abcdef-passphrase"
  frontend:
    type: http
    allow: ["10.0.0.0/8:443", "127.0.0.1"]
    deny: ["10.9.0.0/16"]
    users: {alice: "pw"}
    max_dials: 8
    dial_timeout: 3s
`
	cfg, err := ParseConfig([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Server.Validate(); err != nil {
		t.Fatal(err)
	}
	logger, _ := testLogger(t)
	fe, err := newFrontend(cfg.Server, logrus.NewEntry(logger))
	if err != nil {
		t.Fatal(err)
	}
	hp, ok := fe.(*frontend.HTTPProxy)
	if !ok || hp.Users["alice"] != "pw" || hp.Dialer.Timeout != 3*time.Second || len(hp.Dialer.ACL.Allow) != 2 || len(hp.Dialer.ACL.Deny) != 1 {
		t.Errorf("built %T %+v", fe, fe)
	}
}

// ttfbPaths are the ways TestTTFB and BenchmarkTTFB fetch a small page:
// each returns a connection on which the response is arriving.
func ttfbPaths(t testing.TB) []ttfbPath {
	o := startOrigin(t)
	host, port := o.hostPort()
	_, socks := frontendTunnel(t, FrontendConfig{Type: "socks5", Allow: loopbackOnly})
	_, hp := frontendTunnel(t, FrontendConfig{Type: "http", Allow: loopbackOnly})
	_, local := clientProxyTunnel(t, "socks5", FrontendConfig{Type: "socks5", Allow: loopbackOnly})
	redirect := startTunnel(t, tunnelOpts{targetPort: int(port)})
	redirect.waitSession()
	return []ttfbPath{
		{"direct", plainGet(o.srv.Listener.Addr().String())},
		// The tunnel alone: the redirect frontend to the same origin.
		{"redirect", plainGet(redirect.cli.Addr().String())},
		{"socks5", socksGet(socks, host, port)},
		{"client-socks5", socksGet(local, host, port)}, // the client answers SOCKS5 itself
		{"http", func() (net.Conn, error) {
			c, err := net.Dial("tcp", hp)
			if err == nil {
				_, err = c.Write([]byte("GET " + o.url("/small") + " HTTP/1.1\r\nHost: x\r\n\r\n"))
			}
			return c, err
		}},
	}
}

// ttfbGet is the request of the TTFB measurements.
var ttfbGet = []byte("GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

// plainGet sends the request to addr as it is.
func plainGet(addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_, err = c.Write(ttfbGet)
		}
		return c, err
	}
}

// socksGet sends the request through the SOCKS5 proxy at addr to
// host:port, as a SOCKS client does: waiting for each answer.
func socksGet(addr, host string, port uint16) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		var b [10]byte
		for _, step := range []struct {
			send []byte
			read int
		}{{[]byte{5, 1, 0}, 2}, {socksConnect(host, port)[3:], 10}, {ttfbGet, 0}} {
			if _, err := c.Write(step.send); err != nil {
				return c, err
			}
			if _, err := io.ReadFull(c, b[:step.read]); err != nil {
				return c, err
			}
		}
		if b[1] != 0 {
			return c, fmt.Errorf("socks reply %d", b[1])
		}
		return c, nil
	}
}

type ttfbPath struct {
	name  string
	fetch func() (net.Conn, error)
}

// ttfb times one fetch up to the response's first byte, then drains it.
func (p ttfbPath) ttfb() (time.Duration, error) {
	start := time.Now()
	c, err := p.fetch()
	if err != nil {
		if c != nil {
			c.Close()
		}
		return 0, err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'H' {
		return 0, fmt.Errorf("first byte %q: %v", b, err)
	}
	d := time.Since(start)
	_, _ = io.Copy(io.Discard, c)
	return d, nil
}

// TestTTFB logs the time to first byte of a small GET on a new
// connection: direct, through the tunnel with the redirect frontend, and
// with the socks5 and http (plain GET) frontends. It asserts nothing
// about timing.
func TestTTFB(t *testing.T) {
	if testing.Short() {
		t.Skip("timing figures only")
	}
	const n = 50
	for _, p := range ttfbPaths(t) {
		d := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			x, err := p.ttfb()
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			d = append(d, x)
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		r := func(x time.Duration) time.Duration { return x.Round(time.Microsecond) }
		t.Logf("TTFB %-8s median %8v  p10 %8v  p90 %8v  (n=%d)", p.name, r(d[n/2]), r(d[n/10]), r(d[n*9/10]), n)
	}
}

// BenchmarkTTFB: ns/op is the mean time to first byte; p50-ns the median.
//
//	go test -run='^$' -bench=TTFB ./runner/
func BenchmarkTTFB(b *testing.B) {
	for _, p := range ttfbPaths(b) {
		b.Run(p.name, func(b *testing.B) {
			d, total := ttfbSamples(b, p)
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/op")
			b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "p50-ns")
		})
	}
}
