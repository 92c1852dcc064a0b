package frontend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"usocks/stages"
)

// TestHTTPProxyOneRequestPerConnection: two requests for two hosts on one
// keep-alive app connection. The first origin gets the first request and
// its body, never the second (with its cookie and credentials), whether
// the second came with the first read or later through the splice; the
// app is told "Connection: close" so that it asks again on a new
// connection.
func TestHTTPProxyOneRequestPerConnection(t *testing.T) {
	a, b := pxListen(t), pxListen(t)
	hostA, hostB := fmt.Sprintf("127.0.0.1:%d", a.port()), fmt.Sprintf("127.0.0.1:%d", b.port())
	second := "GET http://" + hostB + "/two HTTP/1.1\r\nHost: " + hostB + "\r\nCookie: secret=b\r\n" +
		"Proxy-Authorization: " + basicAuth("alice", "s3cret") + "\r\n\r\n"
	cases := []struct {
		name, first, sent string
		later             bool // the second request comes through Write, not with the head
	}{
		{name: "get, pipelined", first: "GET http://" + hostA + "/one HTTP/1.1\r\nHost: " + hostA + "\r\nConnection: keep-alive\r\n\r\n",
			sent: "GET /one HTTP/1.1\r\nHost: " + hostA + "\r\nConnection: close\r\n\r\n"},
		{name: "get, later", first: "GET http://" + hostA + "/one HTTP/1.1\r\nHost: " + hostA + "\r\n\r\n", later: true,
			sent: "GET /one HTTP/1.1\r\nHost: " + hostA + "\r\nConnection: close\r\n\r\n"},
		{name: "post length", first: "POST http://" + hostA + "/up HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
			sent: "POST /up HTTP/1.1\r\nHost: " + hostA + "\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"},
		{name: "post chunked, later", later: true,
			first: "POST http://" + hostA + "/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
			sent:  "POST /up HTTP/1.1\r\nHost: " + hostA + "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			acl, err := newACL([]string{"127.0.0.0/8"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			fe := &HTTPProxy{Dialer: NewDialer(acl, 2*time.Second, 0), Users: map[string]string{"alice": "s3cret"}}
			auth := "Proxy-Authorization: " + basicAuth("alice", "s3cret") + "\r\n"
			first := strings.Replace(c.first, "\r\n", "\r\n"+auth, 1)
			in := first
			if !c.later {
				in += second
			}
			s := &pxStream{r: strings.NewReader(in)}
			conn, err := fe.Open(context.Background(), s)
			if err != nil {
				t.Fatalf("Open: %v (app got %q)", err, s.written())
			}
			defer conn.Close()
			if c.later {
				// The splice hands on what the app sends next, in pieces.
				for _, part := range []string{second[:10], second[10:]} {
					if _, err := conn.Write([]byte(part)); err != nil {
						t.Fatalf("write: %v", err)
					}
				}
			}
			if err := stages.CloseWrite(conn); err != nil {
				t.Fatal(err)
			}
			tc := <-a.conns
			defer tc.Close()
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(tc)
			if err != nil || string(got) != c.sent {
				t.Fatalf("origin A got %q (%v), want only %q", got, err, c.sent)
			}
			resp := "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\nok"
			if _, err := tc.Write([]byte(resp)); err != nil {
				t.Fatal(err)
			}
			_ = tc.Close()
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			app, err := io.ReadAll(conn)
			want := "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
			if err != nil || string(app) != want {
				t.Fatalf("app got %q (%v), want %q", app, err, want)
			}
			a.waitAccepted(t, int64(i+1))
			b.waitAccepted(t, 0)
		})
	}
}

func TestRequestFraming(t *testing.T) {
	for _, c := range []struct {
		head   string
		want   bodyFraming
		status int
	}{
		{head: "GET http://a/ HTTP/1.1\r\n\r\n"},
		{head: "POST http://a/ HTTP/1.1\r\nContent-Length: 12\r\n\r\n", want: bodyFraming{length: 12}},
		{head: "POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", want: bodyFraming{length: 3}},
		{head: "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", want: bodyFraming{chunked: true}},
		{head: "POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", status: 400},
		{head: "POST http://a/ HTTP/1.1\r\nContent-Length: +3\r\n\r\n", status: 400},
		{head: "POST http://a/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n", status: 400},
		{head: "POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", status: 400},
		{head: "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", status: 400},
	} {
		req, _, err := parseHTTPHead([]byte(c.head))
		if err != nil {
			t.Fatal(err)
		}
		got, err := requestFraming(req)
		var he *httpError
		if c.status != 0 {
			if !errors.As(err, &he) || he.Status != c.status {
				t.Errorf("%q: %v, want status %d", c.head, err, c.status)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %+v %v, want %+v", c.head, got, err, c.want)
		}
	}
}

func TestBodyEndChunked(t *testing.T) {
	body := "4\r\nwiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n"
	for _, split := range []int{1, 2, 3, 7, len(body)} {
		b := newBodyEnd(bodyFraming{chunked: true})
		in := body + "NEXT"
		n := 0
		for i := 0; i < len(in) && !b.done(); i += split {
			k, err := b.take([]byte(in[i:min(i+split, len(in))]))
			if err != nil {
				t.Fatalf("split %d: %v", split, err)
			}
			n += k
		}
		if n != len(body) || !b.done() {
			t.Fatalf("split %d: body ends at %d, want %d", split, n, len(body))
		}
	}
	for _, bad := range []string{"x\r\n", "4\r\nwikiX\r\n", strings.Repeat("1", maxBodyLine+1)} {
		if _, err := newBodyEnd(bodyFraming{chunked: true}).take([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// FuzzBodyEnd: the chunked-body scanner never panics, never takes more
// than it is given, and finds the same end however the bytes are split.
func FuzzBodyEnd(f *testing.F) {
	f.Add([]byte("4\r\nwiki\r\n0\r\n\r\nNEXT"), 3)
	f.Add([]byte("1;a=b\n1\n0\nT: x\n\n"), 1)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		whole := newBodyEnd(bodyFraming{chunked: true})
		n, err := whole.take(in)
		if n > len(in) {
			t.Fatalf("took %d of %d", n, len(in))
		}
		if split <= 0 || split > len(in) {
			return
		}
		parts := newBodyEnd(bodyFraming{chunked: true})
		m, err2 := parts.take(in[:split])
		if err2 == nil && !parts.done() {
			var k int
			k, err2 = parts.take(in[split:])
			m += k
		}
		if (err == nil) != (err2 == nil) || err == nil && (whole.done() != parts.done() || whole.done() && n != m) {
			t.Fatalf("whole: %d %v done=%v; split at %d: %d %v done=%v", n, err, whole.done(), split, m, err2, parts.done())
		}
	})
}

// FuzzResponseHead: a rewritten final head always ends in
// "Connection: close" and keeps no other Connection header.
func FuzzResponseHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 101 Switching\n\n"))
	f.Fuzz(func(t *testing.T, h []byte) {
		out, final := rewriteResponseHead(h)
		if !final {
			return
		}
		s := string(out)
		if !strings.HasSuffix(s, "\r\nConnection: close\r\n\r\n") || strings.Count(strings.ToLower(s), "\nconnection:") != 1 {
			t.Fatalf("%q → %q", h, out)
		}
	})
}
