package frontend

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scriptConn is a visitor whose whole input is known: reads drain in, then
// EOF; writes collect in out.
type scriptConn struct {
	in     *bytes.Reader
	out    bytes.Buffer
	closed bool
}

func (c *scriptConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *scriptConn) Close() error                     { c.closed = true; return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

const testPage = "<!DOCTYPE html><p>decoy</p>\n"

// decoyResponse is one answer of the decoy as a visitor's client reads it.
type decoyResponse struct {
	code  int
	close bool
	body  string
}

// serveScript runs the decoy on a visitor that sent seen (already read by
// the server) and then rest, and parses what it answered. A 200 carries the
// page unless it answers a HEAD; parseDecoy tells them apart by the bytes.
func serveScript(t *testing.T, seen, rest []byte) []decoyResponse {
	t.Helper()
	c := &scriptConn{in: bytes.NewReader(rest)}
	(&Decoy{Page: []byte(testPage), Modified: time.Unix(1700000000, 0)}).Serve(c, seen)
	if !c.closed {
		t.Fatal("the decoy left the connection open")
	}
	return parseDecoy(t, c.out.Bytes())
}

func parseDecoy(t *testing.T, out []byte) []decoyResponse {
	t.Helper()
	var rs []decoyResponse
	br := bufio.NewReader(bytes.NewReader(out))
	tp := textproto.NewReader(br)
	for {
		line, err := tp.ReadLine()
		if err == io.EOF && line == "" {
			return rs
		}
		if err != nil {
			t.Fatalf("status line: %v in %q", err, out)
		}
		proto, status, ok := strings.Cut(line, " ")
		codeText, _, _ := strings.Cut(status, " ")
		code, err := strconv.Atoi(codeText)
		if !ok || proto != "HTTP/1.1" || err != nil {
			t.Fatalf("bad status line %q", line)
		}
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			t.Fatalf("headers: %v", err)
		}
		n, err := strconv.Atoi(h.Get("Content-Length"))
		if code == 304 && h.Get("Content-Length") == "" {
			n, err = 0, nil // no body
		}
		if err != nil || h.Get("Server") != "nginx" || h.Get("Date") == "" {
			t.Fatalf("response headers %v", h)
		}
		r := decoyResponse{code: code, close: h.Get("Connection") == "close"}
		if next, _ := br.Peek(len(testPage)); code != 200 || string(next) == testPage {
			body := make([]byte, n)
			if _, err := io.ReadFull(br, body); err != nil {
				t.Fatalf("body of %d: %v", code, err)
			}
			r.body = string(body)
		} else if n != len(testPage) {
			t.Fatalf("HEAD answer says %d bytes, the page has %d", n, len(testPage))
		}
		rs = append(rs, r)
	}
}

func TestDecoyAnswersLikeAWebServer(t *testing.T) {
	get := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := []struct {
		name       string
		seen, rest string
		want       []int
		lastClose  bool
	}{
		{"nothing", "", "", nil, false},
		{"get page", get, "", []int{200}, false},
		{"get index.html", "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", "", []int{200}, false},
		{"head", "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", "", []int{200}, false},
		{"other path", "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", "", []int{404}, false},
		{"post", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", "", []int{405}, false},
		{"split request", "GE", "T / HTTP/1.1\r\nHost: x\r\n\r\n", []int{200}, false},
		{"keep-alive then close", get, "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + get, []int{200, 404}, true},
		{"tls bytes", "\x16\x03\x01\x02\x00", "", []int{400}, true},
		{"lower-case method", "get / HTTP/1.1\r\n\r\n", "", []int{400}, true},
		{"garbage after a request", get, "\x00\x01\x02\r\n\r\n", []int{200, 400}, true},
		{"request limit", strings.Repeat(get, decoyMaxRequests+3), "", repeatCode(200, decoyMaxRequests), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := serveScript(t, []byte(tc.seen), []byte(tc.rest))
			if len(rs) != len(tc.want) {
				t.Fatalf("%d answers %v, want codes %v", len(rs), rs, tc.want)
			}
			for i, r := range rs {
				if r.code != tc.want[i] {
					t.Errorf("answer %d: %d, want %d", i, r.code, tc.want[i])
				}
				if r.code == 200 && !strings.HasPrefix(tc.name, "head") && r.body != testPage {
					t.Errorf("answer %d: body %q, want the page", i, r.body)
				}
			}
			if len(rs) > 0 && rs[len(rs)-1].close != tc.lastClose {
				t.Errorf("last answer Connection: close = %v, want %v", rs[len(rs)-1].close, tc.lastClose)
			}
		})
	}
}

func repeatCode(code, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = code
	}
	return out
}

// FuzzServeDecoy: whatever a visitor sends, and wherever the server's
// first read cut it, the decoy answers as a web server would — only whole
// responses with the codes a static site gives, at most decoyMaxRequests of
// them, the page only with 200 — and then closes. Bytes that do not start
// like a request line get one 400 at once.
//
//	go test ./stages/frontend/ -run '^$' -fuzz '^FuzzServeDecoy$' -fuzztime 10s
func FuzzServeDecoy(f *testing.F) {
	for _, s := range []string{"", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD /index.html HTTP/1.0\r\n\r\n",
		"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", "OPTIONS * HTTP/1.1\r\n\r\n", "GET /%zz HTTP/1.1\r\n\r\n"} {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		k := int(cut) % (len(in) + 1)
		seen, rest := in[:k], in[k:]
		rs := serveScript(t, seen, rest)
		if len(rs) > decoyMaxRequests {
			t.Fatalf("%d answers on one connection", len(rs))
		}
		if len(seen) > 0 && !looksLikeHTTP(seen) && (len(rs) != 1 || rs[0].code != 400 || !rs[0].close) {
			t.Fatalf("first bytes %q are no request line; answers %v", seen, rs)
		}
		for i, r := range rs {
			switch r.code {
			case 200:
				if r.body != "" && r.body != testPage {
					t.Fatalf("200 with body %q", r.body)
				}
			case 206:
				if !strings.Contains(testPage, r.body) {
					t.Fatalf("206 with body %q, not a part of the page", r.body)
				}
			case 304, 400, 404, 405, 416, 505:
				if strings.Contains(r.body, testPage) {
					t.Fatalf("%d carries the page", r.code)
				}
			default:
				t.Fatalf("answer %d: code %d", i, r.code)
			}
			if r.close && i != len(rs)-1 {
				t.Fatalf("answer %d said Connection: close and more followed", i)
			}
		}
	})
}
