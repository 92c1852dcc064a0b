package frontend

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// localExchange runs LocalProxy.Accept of type typ on one end of a pipe
// while the app writes send on the other; it returns what the app read
// (up to a close or 200 ms of silence) and Accept's result.
func localExchange(t *testing.T, typ string, send []byte) (reply []byte, target string, pending []byte, err error) {
	t.Helper()
	app, cli := net.Pipe()
	defer app.Close()
	type res struct {
		tc  *targetConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		tc, err := (&LocalProxy{Type: typ, HandshakeTimeout: 5 * time.Second}).Accept(cli)
		r := res{err: err}
		switch c := tc.(type) {
		case *targetConn:
			r.tc = c
		case *localPlainConn:
			r.tc = c.targetConn
		}
		if err != nil {
			_ = cli.Close()
		}
		ch <- r
	}()
	go func() { _, _ = app.Write(send) }()
	var buf bytes.Buffer
	for {
		_ = app.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		b := make([]byte, 512)
		n, rerr := app.Read(b)
		buf.Write(b[:n])
		if rerr != nil {
			break
		}
	}
	r := <-ch
	if r.tc != nil {
		target = hex.EncodeToString(r.tc.target)
		pending = r.tc.pending
	}
	return buf.Bytes(), target, pending, r.err
}

func TestLocalProxy(t *testing.T) {
	ok := append([]byte{5, 0}, AppendSocksReply(nil, SocksSucceeded, netip.AddrPort{})...)
	connect := []byte("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nearly")
	get := []byte("GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\nProxy-Connection: keep-alive\r\n\r\n")
	for _, tc := range []struct {
		name, typ string
		send      []byte
		reply     []byte
		target    string // hex of the SYN target; "" refused
		pending   string
	}{
		{"socks5 name", LocalSocks5, []byte("\x05\x01\x00\x05\x01\x00\x03\x0bexample.com\x01\xbb"), ok, "030b6578616d706c652e636f6d01bb", ""},
		{"socks5 ipv4", LocalSocks5, []byte{5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 7, 0, 80}, ok, "01c00002070050", ""},
		{"socks5 in mixed", LocalMixed, []byte{5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 7, 0, 80}, ok, "01c00002070050", ""},
		{"socks5 bind", LocalSocks5, []byte{5, 1, 0, 5, 2, 0, 1, 192, 0, 2, 7, 0, 80}, append([]byte{5, 0}, AppendSocksReply(nil, SocksCmdNotSupported, netip.AddrPort{})...), "", ""},
		{"socks5 bad name", LocalSocks5, []byte("\x05\x01\x00\x05\x01\x00\x03\x03a b\x00\x50"), append([]byte{5, 0}, AppendSocksReply(nil, SocksHostUnreachable, netip.AddrPort{})...), "", ""},
		{"http connect", LocalHTTP, connect, []byte("HTTP/1.1 200 Connection established\r\n\r\n"), "030b6578616d706c652e636f6d01bb", "early"},
		{"http connect in mixed", LocalMixed, connect, []byte("HTTP/1.1 200 Connection established\r\n\r\n"), "030b6578616d706c652e636f6d01bb", "early"},
		{"http plain", LocalMixed, get, nil, "030b6578616d706c652e636f6d0050", "GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"},
		{"http https scheme", LocalHTTP, []byte("GET https://example.com/ HTTP/1.1\r\n\r\n"), appendHTTPError(nil, 501, `scheme "https" not supported; use CONNECT`), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply, target, pending, err := localExchange(t, tc.typ, tc.send)
			if !bytes.Equal(reply, tc.reply) {
				t.Errorf("reply %q, want %q", reply, tc.reply)
			}
			if target != tc.target || string(pending) != tc.pending {
				t.Errorf("target %s pending %q, want %s %q", target, pending, tc.target, tc.pending)
			}
			if (tc.target == "") != (err != nil) {
				t.Errorf("err %v", err)
			}
		})
	}
}

// A client-side plain request: the app's request and body reach the
// tunnel and nothing after them; the origin's response head says
// Connection: close.
func TestLocalPlainConn(t *testing.T) {
	app, cli := net.Pipe()
	defer app.Close()
	req := "POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nbo"
	go func() {
		_, _ = app.Write([]byte(req))
		_, _ = app.Write([]byte("dyGET http://other.example/ HTTP/1.1\r\nCookie: secret\r\n\r\n"))
	}()
	tc, err := (&LocalProxy{Type: LocalHTTP}).Accept(cli)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	b := make([]byte, 512)
	for !bytes.HasSuffix(got, []byte("body")) {
		n, err := tc.Read(b)
		if err != nil {
			t.Fatalf("read %q: %v", got, err)
		}
		got = append(got, b[:n]...)
	}
	want := "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody"
	if string(got) != want {
		t.Fatalf("to the origin %q, want %q", got, want)
	}
	// What follows the body is read and discarded, never passed on.
	leak := make(chan []byte, 1)
	go func() {
		n, _ := tc.Read(b)
		leak <- append([]byte(nil), b[:n]...)
	}()
	go func() {
		_, _ = tc.Write([]byte("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"))
	}()
	resp := make([]byte, 0, 256)
	for !bytes.HasSuffix(resp, []byte("ok")) {
		_ = app.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := app.Read(b)
		if err != nil {
			t.Fatalf("response %q: %v", resp, err)
		}
		resp = append(resp, b[:n]...)
	}
	if bytes.Contains(resp, []byte("keep-alive")) || !bytes.Contains(resp, []byte("Connection: close")) {
		t.Errorf("response to the app %q", resp)
	}
	_ = app.Close()
	if p := <-leak; len(p) != 0 {
		t.Errorf("bytes after the body passed on: %q", p)
	}
}

// targetConn gives the pending bytes before the connection's own.
func TestTargetConnRead(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	tc := &targetConn{Conn: b, pending: []byte("head")}
	go func() { _, _ = a.Write([]byte("body")); _ = a.Close() }()
	got, err := io.ReadAll(tc)
	if string(got) != "headbody" || (err != nil && !errors.Is(err, io.EOF)) {
		t.Fatalf("read %q, %v", got, err)
	}
}
