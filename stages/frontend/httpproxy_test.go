package frontend

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"go.uber.org/goleak"
)

func TestParseHTTPHead(t *testing.T) {
	type hdr = httpHeader
	cases := []struct {
		name   string
		in     string
		method string
		target string
		proto  string
		header []httpHeader
		headAt int // head length; 0 = len(in)
		status int // expected *httpError status; -1 = errHeadIncomplete
	}{
		{name: "absolute", in: "GET http://example.org/x HTTP/1.1\r\nHost: example.org\r\nUser-Agent:  t 1 \r\n\r\n",
			method: "GET", target: "http://example.org/x", proto: "HTTP/1.1", header: []hdr{{"Host", "example.org"}, {"User-Agent", "t 1"}}},
		{name: "body after head", in: "POST http://a/ HTTP/1.0\r\nContent-Length: 4\r\n\r\nBODY", headAt: 46,
			method: "POST", target: "http://a/", proto: "HTTP/1.0", header: []hdr{{"Content-Length", "4"}}},
		{name: "connect", in: "CONNECT example.org:443 HTTP/1.1\r\n\r\n\x16\x03\x01", headAt: 36,
			method: "CONNECT", target: "example.org:443", proto: "HTTP/1.1"},
		{name: "bare LF", in: "GET http://a/ HTTP/1.1\nHost: a\n\n", method: "GET", target: "http://a/", proto: "HTTP/1.1", header: []hdr{{"Host", "a"}}},
		{name: "leading empty lines", in: "\r\n\nGET http://a/ HTTP/1.1\r\n\r\n", method: "GET", target: "http://a/", proto: "HTTP/1.1"},
		{name: "empty value", in: "GET http://a/ HTTP/1.1\r\nX-Empty:\r\n\r\n", method: "GET", target: "http://a/", proto: "HTTP/1.1", header: []hdr{{"X-Empty", ""}}},
		{name: "obs-text value", in: "GET http://a/ HTTP/1.1\r\nX: caf\xc3\xa9\t\r\n\r\n", method: "GET", target: "http://a/", proto: "HTTP/1.1", header: []hdr{{"X", "caf\xc3\xa9"}}},
		{name: "too many empty lines", in: strings.Repeat("\r\n", maxLeadingEmptyLines+1) + "GET http://a/ HTTP/1.1\r\n\r\n", status: 400},
		{name: "incomplete headers", in: "GET http://a/ HTTP/1.1\r\nHost: a\r\n", status: -1},
		{name: "incomplete line", in: "GET http://a/ HT", status: -1},
		{name: "incomplete CR", in: "GET http://a/ HTTP/1.1\r", status: -1},
		{name: "empty", in: "", status: -1},
		{name: "tls to the proxy", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", status: 400},
		{name: "binary in partial line", in: "GET http://a/\x00", status: 400},
		{name: "double space", in: "GET  http://a/ HTTP/1.1\r\n\r\n", status: 400},
		{name: "two fields", in: "GET http://a/\r\n\r\n", status: 400},
		{name: "four fields", in: "GET http://a/ HTTP/1.1 x\r\n\r\n", status: 400},
		{name: "http/2", in: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", status: 505},
		{name: "http/0.9", in: "GET /\r\n\r\n", status: 400},
		{name: "bad proto", in: "GET http://a/ FOO/1.1\r\n\r\n", status: 400},
		{name: "lower proto", in: "GET http://a/ http/1.1\r\n\r\n", status: 400},
		{name: "bad method", in: "G(T http://a/ HTTP/1.1\r\n\r\n", status: 400},
		{name: "non-ascii target", in: "GET http://a/\xff HTTP/1.1\r\n\r\n", status: 400},
		{name: "obs-fold", in: "GET http://a/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n", status: 400},
		{name: "space before colon", in: "GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n", status: 400},
		{name: "no colon", in: "GET http://a/ HTTP/1.1\r\nHost\r\n\r\n", status: 400},
		{name: "empty name", in: "GET http://a/ HTTP/1.1\r\n: a\r\n\r\n", status: 400},
		{name: "control in value", in: "GET http://a/ HTTP/1.1\r\nX: a\x01b\r\n\r\n", status: 400},
		{name: "bare CR in value", in: "GET http://a/ HTTP/1.1\r\nX: a\rb\r\n\r\n", status: 400},
		{name: "bad header before end", in: "GET http://a/ HTTP/1.1\r\nX y\r\n", status: 400},
		{name: "too many headers", in: "GET http://a/ HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", maxHTTPHeaders+1) + "\r\n", status: 431},
	}
	for _, c := range cases {
		req, n, err := parseHTTPHead([]byte(c.in))
		var he *httpError
		switch {
		case c.status == -1:
			if !errors.Is(err, errHeadIncomplete) {
				t.Errorf("%s: %v, want incomplete", c.name, err)
			}
		case c.status != 0:
			if !errors.As(err, &he) || he.Status != c.status {
				t.Errorf("%s: %v, want status %d", c.name, err, c.status)
			}
		default:
			want := c.headAt
			if want == 0 {
				want = len(c.in)
			}
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			if n != want || req.Method != c.method || req.Target != c.target || req.Proto != c.proto || fmt.Sprint(req.Header) != fmt.Sprint(c.header) {
				t.Errorf("%s: %d %+v, want %d %s %s %s %v", c.name, n, req, want, c.method, c.target, c.proto, c.header)
			}
		}
	}
	// Exactly maxHTTPHeaders header lines are fine.
	in := "GET http://a/ HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", maxHTTPHeaders) + "\r\n"
	if _, _, err := parseHTTPHead([]byte(in)); err != nil {
		t.Errorf("%d headers: %v", maxHTTPHeaders, err)
	}
}

func TestReadHTTPHead(t *testing.T) {
	head := "POST http://a/ HTTP/1.1\r\nContent-Length: 4\r\n\r\n"
	req, rest, err := readHTTPHead(strings.NewReader(head + "BODY"))
	if err != nil || req.Method != "POST" || string(rest) != "BODY" {
		t.Errorf("one read: %+v %q %v", req, rest, err)
	}
	r := strings.NewReader(head + "BODY")
	req, rest, err = readHTTPHead(iotest.OneByteReader(r))
	if err != nil || req.Method != "POST" || len(rest) != 0 || r.Len() != 4 {
		t.Errorf("byte by byte: %+v %q %v, %d left", req, rest, err, r.Len())
	}
	for _, c := range []struct {
		in     string
		status int
		err    error
	}{
		{"\r0", 400, nil},
		{"GET http://a/ HTTP/1.1\r\nX: a\rb", 400, nil},
		{"GET http://a/\x00", 400, nil},
		{"GET http://a/ HTTP/1.1\r\n", 0, io.EOF},
		{"", 0, io.EOF},
		{"GET http://a/ HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHTTPHead), 431, nil},
	} {
		_, _, err := readHTTPHead(iotest.OneByteReader(strings.NewReader(c.in)))
		var he *httpError
		if c.status != 0 && (!errors.As(err, &he) || he.Status != c.status) || c.err != nil && !errors.Is(err, c.err) {
			t.Errorf("%.40q: %v, want status %d / %v", c.in, err, c.status, c.err)
		}
	}
}

func TestRouteHTTPRequest(t *testing.T) {
	cases := []struct {
		name   string
		head   string
		host   string
		port   uint16
		fwd    string // forwarded head; "" for CONNECT
		status int
	}{
		{name: "connect", head: "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n", host: "example.org", port: 443},
		{name: "connect v6", head: "CONNECT [::1]:22 HTTP/1.1\r\n\r\n", host: "::1", port: 22},
		{name: "connect ip", head: "CONNECT 127.0.0.1:8080 HTTP/1.0\r\n\r\n", host: "127.0.0.1", port: 8080},
		{name: "connect no port", head: "CONNECT example.org HTTP/1.1\r\n\r\n", status: 400},
		{name: "connect empty port", head: "CONNECT example.org: HTTP/1.1\r\n\r\n", status: 400},
		{name: "connect port 0", head: "CONNECT example.org:0 HTTP/1.1\r\n\r\n", status: 400},
		{name: "connect port big", head: "CONNECT example.org:65536 HTTP/1.1\r\n\r\n", status: 400},
		{name: "connect url", head: "CONNECT http://example.org:80/ HTTP/1.1\r\n\r\n", status: 400},
		{name: "connect zone", head: "CONNECT [fe80::1%25eth0]:80 HTTP/1.1\r\n\r\n", status: 400},
		{name: "get", head: "GET http://example.org/p?q=1#frag HTTP/1.1\r\nHost: evil.example\r\nUser-Agent: t\r\nProxy-Connection: keep-alive\r\n" +
			"Proxy-Authorization: Basic eDp5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n",
			host: "example.org", port: 80, fwd: "GET /p?q=1 HTTP/1.1\r\nHost: example.org\r\nUser-Agent: t\r\nAccept: */*\r\nConnection: close\r\n\r\n"},
		{name: "port and no path", head: "HEAD http://example.org:8080 HTTP/1.0\r\n\r\n", host: "example.org", port: 8080,
			fwd: "HEAD / HTTP/1.0\r\nHost: example.org:8080\r\nConnection: close\r\n\r\n"},
		{name: "query only", head: "GET http://a.example?x=1 HTTP/1.1\r\n\r\n", host: "a.example", port: 80,
			fwd: "GET /?x=1 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n"},
		{name: "scheme case", head: "POST HTTP://A.Example/up HTTP/1.1\r\nContent-Length: 3\r\n\r\n", host: "A.Example", port: 80,
			fwd: "POST /up HTTP/1.1\r\nHost: A.Example\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"},
		{name: "v6 literal", head: "GET http://[::1]:8080/ HTTP/1.1\r\n\r\n", host: "::1", port: 8080,
			fwd: "GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n"},
		{name: "empty port", head: "GET http://a.example:/ HTTP/1.1\r\n\r\n", host: "a.example", port: 80,
			fwd: "GET / HTTP/1.1\r\nHost: a.example:\r\nConnection: close\r\n\r\n"},
		{name: "https", head: "GET https://example.org/ HTTP/1.1\r\n\r\n", status: 501},
		{name: "ftp", head: "GET ftp://example.org/ HTTP/1.1\r\n\r\n", status: 501},
		{name: "origin form", head: "GET / HTTP/1.1\r\nHost: example.org\r\n\r\n", status: 400},
		{name: "asterisk", head: "OPTIONS * HTTP/1.1\r\n\r\n", status: 400},
		{name: "userinfo", head: "GET http://u:p@example.org/ HTTP/1.1\r\n\r\n", status: 400},
		{name: "empty host", head: "GET http:///x HTTP/1.1\r\n\r\n", status: 400},
		{name: "bad host", head: "GET http://exa_mple..org/ HTTP/1.1\r\n\r\n", status: 400},
		{name: "bad port", head: "GET http://example.org:http/ HTTP/1.1\r\n\r\n", status: 400},
		{name: "trace", head: "TRACE http://example.org/ HTTP/1.1\r\n\r\n", status: 405},
	}
	for _, c := range cases {
		req, _, err := parseHTTPHead([]byte(c.head))
		if err != nil {
			t.Fatalf("%s: parse: %v", c.name, err)
		}
		pt, err := routeHTTPRequest(req)
		if c.status != 0 {
			var he *httpError
			if !errors.As(err, &he) || he.Status != c.status {
				t.Errorf("%s: %+v %v, want status %d", c.name, pt, err, c.status)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if pt.Host != c.host || pt.Port != c.port || pt.Connect != (c.fwd == "") || string(pt.Head) != c.fwd {
			t.Errorf("%s: got %s:%d connect=%v head %q\nwant %s:%d head %q", c.name, pt.Host, pt.Port, pt.Connect, pt.Head, c.host, c.port, c.fwd)
		}
	}
}

func TestAppendHTTPError(t *testing.T) {
	got := string(appendHTTPError(nil, 407, "proxy authentication required"))
	want := "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"usocks\"\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 38\r\n\r\nusocks: proxy authentication required\n"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func basicAuth(u, p string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p))
}

func TestHTTPProxyOpen(t *testing.T) {
	l := pxListen(t)
	closed := pxClosedPort(t)
	target := fmt.Sprintf("127.0.0.1:%d", l.port())
	lo := []string{"127.0.0.0/8"}
	users := map[string]string{"alice": "s3cret"}
	cases := []struct {
		name   string
		allow  []string
		users  map[string]string
		in     string
		reply  string // what the app gets: the full 200, or an error status line
		sent   string // what the target must receive first (success only)
		status int
	}{
		{name: "connect", allow: lo, in: "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\nEARLY",
			reply: "HTTP/1.1 200 Connection established\r\n\r\n", sent: "EARLY"},
		{name: "get", allow: lo, in: "POST http://" + target + "/up?x HTTP/1.1\r\nHost: wrong\r\nContent-Length: 4\r\nProxy-Connection: keep-alive\r\n\r\nBODY",
			sent: "POST /up?x HTTP/1.1\r\nHost: " + target + "\r\nContent-Length: 4\r\nConnection: close\r\n\r\nBODY"},
		{name: "connect auth", allow: lo, users: users, in: "CONNECT " + target + " HTTP/1.1\r\nProxy-Authorization: " + basicAuth("alice", "s3cret") + "\r\n\r\n",
			reply: "HTTP/1.1 200 Connection established\r\n\r\n"},
		{name: "get auth", allow: lo, users: users, in: "GET http://" + target + "/ HTTP/1.1\r\nproxy-authorization: basic " + basicAuth("alice", "s3cret")[6:] + "\r\n\r\n",
			sent: "GET / HTTP/1.1\r\nHost: " + target + "\r\nConnection: close\r\n\r\n"},
		{name: "no auth", allow: lo, users: users, in: "CONNECT " + target + " HTTP/1.1\r\n\r\n", status: 407},
		{name: "wrong password", allow: lo, users: users, in: "CONNECT " + target + " HTTP/1.1\r\nProxy-Authorization: " + basicAuth("alice", "nope") + "\r\n\r\n", status: 407},
		{name: "unknown user", allow: lo, users: users, in: "GET http://" + target + "/ HTTP/1.1\r\nProxy-Authorization: " + basicAuth("bob", "s3cret") + "\r\n\r\n", status: 407},
		{name: "not basic", allow: lo, users: users, in: "GET http://" + target + "/ HTTP/1.1\r\nProxy-Authorization: Bearer x\r\n\r\n", status: 407},
		{name: "bad base64", allow: lo, users: users, in: "GET http://" + target + "/ HTTP/1.1\r\nProxy-Authorization: Basic !!!\r\n\r\n", status: 407},
		{name: "denied", in: "CONNECT " + target + " HTTP/1.1\r\n\r\n", status: 403},
		{name: "denied get", in: "GET http://" + target + "/ HTTP/1.1\r\n\r\n", status: 403},
		{name: "refused", allow: lo, in: fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", closed), status: 502},
		{name: "refused get", allow: lo, in: fmt.Sprintf("GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n", closed), status: 502},
		{name: "unknown host", in: "CONNECT nothing.invalid:443 HTTP/1.1\r\n\r\n", status: 502},
		{name: "malformed", in: "HELLO\r\n\r\n", status: 400},
		{name: "binary", in: "\x16\x03\x01\x00", status: 400},
		{name: "origin form", in: "GET / HTTP/1.1\r\n\r\n", status: 400},
		{name: "trace", in: "TRACE http://" + target + "/ HTTP/1.1\r\n\r\n", status: 405},
		{name: "https scheme", in: "GET https://" + target + "/ HTTP/1.1\r\n\r\n", status: 501},
		{name: "http/2", in: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", status: 505},
		{name: "head too large", in: "GET http://a/ HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHTTPHead) + "\r\n\r\n", status: 431},
	}
	accepted := int64(0)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			acl, err := newACL(c.allow, nil)
			if err != nil {
				t.Fatal(err)
			}
			fe := &HTTPProxy{Dialer: NewDialer(acl, 2*time.Second, 0), Users: c.users}
			s := &pxStream{r: iotest.HalfReader(strings.NewReader(c.in))}
			conn, err := fe.Open(context.Background(), s)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			out := string(s.written())
			if c.status != 0 {
				if _, ok := conn.(closedConn); !ok {
					conn.Close()
					t.Fatalf("got a target connection, want status %d", c.status)
				}
				line := fmt.Sprintf("HTTP/1.1 %d %s\r\n", c.status, statusText[c.status])
				if !strings.HasPrefix(out, line) || !strings.Contains(out, "\r\nConnection: close\r\n") {
					t.Errorf("app got %q, want %q...", out, line)
				}
				if c.status == 407 && !strings.Contains(out, "\r\nProxy-Authenticate: Basic realm=\"usocks\"\r\n") {
					t.Errorf("407 without Proxy-Authenticate: %q", out)
				}
				return
			}
			defer conn.Close()
			accepted++
			if out != c.reply {
				t.Errorf("app got %q, want %q", out, c.reply)
			}
			var tc net.Conn
			select {
			case tc = <-l.conns:
			case <-time.After(5 * time.Second):
				t.Fatal("target got no connection")
			}
			defer tc.Close()
			if c.sent == "" {
				return
			}
			_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, len(c.sent))
			if _, err := io.ReadFull(tc, got); err != nil || string(got) != c.sent {
				t.Errorf("target got %q %v, want %q", got, err, c.sent)
			}
		})
	}
	l.waitAccepted(t, accepted)
}

func TestHTTPProxyHandshakeTimeout(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	pr, pw := io.Pipe()
	fe := &HTTPProxy{Dialer: NewDialer(nil, time.Second, 0), HandshakeTimeout: 50 * time.Millisecond}
	go func() { _, _ = pw.Write([]byte("GET http://a/ HTTP/1.1\r\n")) }()
	if _, err := fe.Open(context.Background(), &pxStream{r: pr}); !errors.Is(err, errHandshakeTimeout) {
		t.Fatalf("Open: %v, want the handshake timeout", err)
	}
	_ = pw.CloseWithError(net.ErrClosed)
	_ = pr.Close()
	// A stream that ends before its request is complete is reset.
	if _, err := fe.Open(context.Background(), &pxStream{r: strings.NewReader("GET http://a/ HTTP/1.1\r\n")}); err == nil {
		t.Fatal("Open on a truncated head succeeded")
	}
}

// FuzzParseHTTPHead checks the head parser and the routing on arbitrary
// input: no panics, consistent lengths, bounded output.
func FuzzParseHTTPHead(f *testing.F) {
	f.Add([]byte("GET http://example.org/x HTTP/1.1\r\nHost: example.org\r\nConnection: a, b\r\na: 1\r\n\r\nBODY"))
	f.Add([]byte("CONNECT [::1]:443 HTTP/1.1\r\n\r\n"))
	f.Add([]byte("\r\nPOST HTTP://a:80?q HTTP/1.0\nX:\t y \n\n"))
	f.Add([]byte("GET http://u@h/ HTTP/1.1\r\n X\r\n\r\n"))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > MaxHTTPHead {
			b = b[:MaxHTTPHead]
		}
		req, n, err := parseHTTPHead(b)
		// Reading a byte at a time from a stream agrees with one parse.
		sreq, rest, serr := readHTTPHead(iotest.OneByteReader(bytes.NewReader(b)))
		var he *httpError
		switch {
		case err == nil:
			if serr != nil || fmt.Sprint(sreq) != fmt.Sprint(req) || len(rest) != 0 {
				t.Fatalf("readHTTPHead: %v %q %v; parseHTTPHead: %v", sreq, rest, serr, req)
			}
		case errors.As(err, &he):
			if !errors.As(serr, &he) {
				t.Fatalf("parseHTTPHead: %v; readHTTPHead: %v", err, serr)
			}
		case errors.Is(err, errHeadIncomplete):
			if len(b) == MaxHTTPHead {
				if !errors.As(serr, &he) || he.Status != 431 {
					t.Fatalf("full buffer without a head: %v", serr)
				}
			} else if !errors.Is(serr, io.EOF) {
				t.Fatalf("incomplete head then EOF: %v", serr)
			}
		default:
			t.Fatalf("unexpected error type %T: %v", err, err)
		}
		if err != nil {
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("head length %d of %d bytes", n, len(b))
		}
		again, n2, err := parseHTTPHead(b[:n])
		if err != nil || n2 != n || fmt.Sprint(again) != fmt.Sprint(req) {
			t.Fatalf("the head alone parses differently: %v %d %v", again, n2, err)
		}
		if len(req.Header) > maxHTTPHeaders {
			t.Fatalf("%d headers", len(req.Header))
		}
		pt, err := routeHTTPRequest(req)
		if err != nil {
			return
		}
		if !validHost(pt.Host) || pt.Port == 0 {
			t.Fatalf("routes to %q:%d", pt.Host, pt.Port)
		}
		if len(pt.Head) > n+64 {
			t.Fatalf("forwarded head of %d bytes from a head of %d", len(pt.Head), n)
		}
		if !pt.Connect {
			// The forwarded head must itself be one valid head.
			fwd, fn, err := parseHTTPHead(pt.Head)
			if err != nil || fn != len(pt.Head) || fwd.Method != req.Method {
				t.Fatalf("forwarded head %q does not parse: %v", pt.Head, err)
			}
		}
	})
}
