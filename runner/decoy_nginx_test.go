package runner

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// rawExchange sends req on a fresh connection to addr (inside TLS unless
// plain) and returns the response bytes: one response, or everything up to
// the close when the server closes.
func rawExchange(t *testing.T, addr string, useTLS bool, req string) string {
	t.Helper()
	c, err := dialVisitor(addr, useTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &got))
	method := strings.SplitN(req, " ", 2)[0]
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return got.String() + fmt.Sprintf("<%v>", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	n := got.Len() - br.Buffered()
	out := got.String()[:n]
	if resp.Close {
		rest, err := io.ReadAll(br)
		out += string(rest)
		if err != nil {
			out += fmt.Sprintf("<%v>", err)
		}
	}
	return out
}

// dialVisitor connects to addr as a web client, inside TLS (any
// certificate, ALPN http/1.1) unless plain.
func dialVisitor(addr string, useTLS bool) (net.Conn, error) {
	if useTLS {
		return tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	}
	return net.Dial("tcp", addr)
}

var dateHeader = regexp.MustCompile(`(?mi)^Date: [^\r]*\r$`)

// TestDecoyAnswersLikeNginx sends the same requests to the built-in decoy
// and to Debian's nginx (server_tokens off) serving the same page file with
// the same certificate, and wants the same bytes back (Date aside): status
// lines, headers and their order, ETag and Last-Modified, 304s, error
// pages; plain HTTP to the TLS port included.
func TestDecoyAnswersLikeNginx(t *testing.T) {
	dir := t.TempDir()
	page := filepath.Join(dir, "index.html")
	if err := os.WriteFile(page, []byte("<html><body>hello from the site</body></html>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cert, key := selfSigned(t)
	ngx := runNginx(t, func(listen string) string {
		return fmt.Sprintf("  server {\n    listen %s ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n    root %s;\n  }\n", listen, cert, key, dir)
	})
	tg := startTarget(t)
	srv, _, stop := startTLSTunnel(t, tg.port(), page)
	defer stop()
	fi, err := os.Stat(page)
	if err != nil {
		t.Fatal(err)
	}
	etag := fmt.Sprintf(`"%x-%x"`, fi.ModTime().Unix(), fi.Size())
	lastMod := fi.ModTime().UTC().Format(http.TimeFormat)
	reqs := []struct {
		name  string
		plain bool
		req   string
	}{
		{"GET /", false, "GET / HTTP/1.1\r\nHost: usocks.test\r\n\r\n"},
		{"GET /index.html close", false, "GET /index.html HTTP/1.1\r\nHost: usocks.test\r\nConnection: close\r\n\r\n"},
		{"HEAD /", false, "HEAD / HTTP/1.1\r\nHost: usocks.test\r\n\r\n"},
		{"404", false, "GET /missing HTTP/1.1\r\nHost: usocks.test\r\n\r\n"},
		{"404 close", false, "GET /favicon.ico HTTP/1.1\r\nHost: usocks.test\r\nConnection: close\r\n\r\n"},
		{"no Host", false, "GET / HTTP/1.1\r\n\r\n"},
		{"HTTP/1.0", false, "GET / HTTP/1.0\r\n\r\n"},
		{"HTTP/1.0 keep-alive", false, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
		{"POST", false, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"},
		{"DELETE missing", false, "DELETE /missing HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"HTTP/2.0 line", false, "GET / HTTP/2.0\r\nHost: x\r\n\r\n"},
		{"If-None-Match", false, "GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + "\r\n\r\n"},
		{"If-None-Match other", false, "GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"1-2\"\r\n\r\n"},
		{"If-Modified-Since", false, "GET / HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: " + lastMod + "\r\n\r\n"},
		{"dot segments", false, "GET /a/../index.html?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"double slash", false, "GET //index.html HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"trailing slash", false, "GET /index.html/ HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"above root", false, "GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"range", false, "GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=0-4\r\n\r\n"},
		{"suffix range", false, "GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=-5\r\n\r\n"},
		{"open range", false, "GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=10-\r\n\r\n"},
		{"range past the end", false, "GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=10-999\r\n\r\n"},
		{"unsatisfiable range", false, "GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=100-\r\nConnection: close\r\n\r\n"},
		{"malformed range", false, "GET / HTTP/1.1\r\nHost: x\r\nRange: garbage\r\n\r\n"},
		{"garbage in TLS", false, "\x00\x01garbage\r\n\r\n"},
		{"plain HTTP", true, "GET / HTTP/1.1\r\nHost: usocks.test\r\n\r\n"},
		{"plain garbage", true, "\x00\x01garbage\r\n\r\n"},
	}
	for _, r := range reqs {
		t.Run(r.name, func(t *testing.T) {
			want := dateHeader.ReplaceAllString(rawExchange(t, ngx, !r.plain, r.req), "Date: *\r")
			got := dateHeader.ReplaceAllString(rawExchange(t, srv.Addr().String(), !r.plain, r.req), "Date: *\r")
			if got != want {
				t.Errorf("decoy:\n%q\nnginx:\n%q", got, want)
			}
		})
	}
}
