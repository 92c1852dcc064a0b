package frontend

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/iotest"
	"testing/synctest"
	"time"
)

// pxStream is a stages.StreamIO for frontend tests: the app's bytes come from r,
// the frontend's replies collect in out.
type pxStream struct {
	r   io.Reader
	mu  sync.Mutex
	out bytes.Buffer
}

func (s *pxStream) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s *pxStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}
func (s *pxStream) ID() uint16 { return 7 }
func (s *pxStream) written() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.out.Bytes()...)
}

func TestReadSocksRequest(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want SocksRequest
		code byte // expected *socksError code; 0 = success
		err  error
		left int // bytes that must stay unread
	}{
		{"ipv4", []byte{5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90, 'x'}, SocksRequest{1, 1, "127.0.0.1", 8080}, 0, nil, 1},
		{"ipv6", append(append([]byte{5, 1, 0, 4}, netip.MustParseAddr("2001:db8::1").AsSlice()...), 0, 80), SocksRequest{1, 4, "2001:db8::1", 80}, 0, nil, 0},
		{"ipv6 mapped", append(append([]byte{5, 1, 0, 4}, netip.MustParseAddr("::ffff:127.0.0.1").AsSlice()...), 0, 80), SocksRequest{1, 4, "::ffff:127.0.0.1", 80}, 0, nil, 0},
		{"domain", append([]byte{5, 1, 0, 3, 11}, "example.org\x01\xbbGET"...), SocksRequest{1, 3, "example.org", 443}, 0, nil, 3},
		{"bind", []byte{5, 2, 0, 1, 10, 0, 0, 1, 0, 21}, SocksRequest{2, 1, "10.0.0.1", 21}, 0, nil, 0},
		{"udp", []byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0}, SocksRequest{3, 1, "0.0.0.0", 0}, 0, nil, 0},
		{"rsv ignored", []byte{5, 1, 9, 1, 1, 2, 3, 4, 0, 1}, SocksRequest{1, 1, "1.2.3.4", 1}, 0, nil, 0},
		{"bad atyp", []byte{5, 1, 0, 2, 1, 2, 3, 4, 0, 1}, SocksRequest{}, SocksAtypNotSupported, nil, 6},
		{"empty domain", []byte{5, 1, 0, 3, 0, 0, 80}, SocksRequest{}, SocksGeneralFailure, nil, 0},
		{"bad domain", append([]byte{5, 1, 0, 3, 5}, "a b.c\x00\x50"...), SocksRequest{}, SocksHostUnreachable, nil, 0},
		{"zone as domain", append([]byte{5, 1, 0, 3, 12}, "fe80::1%eth0\x00\x50"...), SocksRequest{}, SocksHostUnreachable, nil, 0},
		{"version 4", []byte{4, 1, 0, 80, 127, 0, 0, 1}, SocksRequest{}, 0, errSocksVersion, 4},
		{"short header", []byte{5, 1, 0}, SocksRequest{}, 0, io.ErrUnexpectedEOF, 0},
		{"short ipv4", []byte{5, 1, 0, 1, 127, 0}, SocksRequest{}, 0, io.ErrUnexpectedEOF, 0},
		{"short domain", []byte{5, 1, 0, 3, 10, 'a'}, SocksRequest{}, 0, io.ErrUnexpectedEOF, 0},
		{"empty", nil, SocksRequest{}, 0, io.EOF, 0},
	}
	for _, c := range cases {
		r := bytes.NewReader(c.in)
		got, err := readSocksRequest(iotest.OneByteReader(r))
		var se *socksError
		switch {
		case c.code != 0:
			if !errors.As(err, &se) || se.Code != c.code {
				t.Errorf("%s: err %v, want reply %d", c.name, err, c.code)
			}
		case c.err != nil:
			if !errors.Is(err, c.err) {
				t.Errorf("%s: err %v, want %v", c.name, err, c.err)
			}
		default:
			if err != nil || got != c.want {
				t.Errorf("%s: %+v %v, want %+v", c.name, got, err, c.want)
			}
			enc := AppendSocksRequest(nil, got)
			consumed := c.in[:len(c.in)-c.left]
			norm := append([]byte(nil), consumed...)
			norm[2] = 0
			if !bytes.Equal(enc, norm) {
				t.Errorf("%s: re-encoded %x, read %x", c.name, enc, norm)
			}
		}
		if r.Len() != c.left {
			t.Errorf("%s: %d bytes left unread, want %d", c.name, r.Len(), c.left)
		}
	}
}

func TestReadSocksGreetingAndUserPass(t *testing.T) {
	m, err := readSocksGreeting(bytes.NewReader([]byte{5, 2, 0, 2, 9}))
	if err != nil || !bytes.Equal(m, []byte{0, 2}) {
		t.Errorf("greeting: %v %v", m, err)
	}
	if m, err := readSocksGreeting(bytes.NewReader([]byte{5, 0})); err != nil || len(m) != 0 {
		t.Errorf("greeting without methods: %v %v", m, err)
	}
	if _, err := readSocksGreeting(bytes.NewReader([]byte{4, 1, 0})); !errors.Is(err, errSocksVersion) {
		t.Errorf("socks4 greeting: %v", err)
	}
	if _, err := readSocksGreeting(bytes.NewReader([]byte{5, 3, 0})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short greeting: %v", err)
	}
	u, p, err := readSocksUserPass(bytes.NewReader([]byte{1, 5, 'a', 'l', 'i', 'c', 'e', 3, 'p', 'w', 'd'}))
	if err != nil || u != "alice" || p != "pwd" {
		t.Errorf("user/pass: %q %q %v", u, p, err)
	}
	u, p, err = readSocksUserPass(bytes.NewReader([]byte{1, 0, 0}))
	if err != nil || u != "" || p != "" {
		t.Errorf("empty user/pass: %q %q %v", u, p, err)
	}
	var se *socksError
	if _, _, err := readSocksUserPass(bytes.NewReader([]byte{5, 1, 'a', 1, 'b'})); !errors.As(err, &se) {
		t.Errorf("user/pass version 5: %v", err)
	}
	if _, _, err := readSocksUserPass(bytes.NewReader([]byte{1, 5, 'a'})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short user/pass: %v", err)
	}
}

func TestAppendSocksReply(t *testing.T) {
	cases := []struct {
		code  byte
		bound netip.AddrPort
		want  []byte
	}{
		{0, netip.MustParseAddrPort("127.0.0.1:8080"), []byte{5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90}},
		{0, netip.MustParseAddrPort("[::ffff:10.0.0.2]:1"), []byte{5, 0, 0, 1, 10, 0, 0, 2, 0, 1}},
		{0, netip.MustParseAddrPort("[2001:db8::2]:443"), append(append([]byte{5, 0, 0, 4}, netip.MustParseAddr("2001:db8::2").AsSlice()...), 1, 0xbb)},
		{5, netip.AddrPort{}, []byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}},
	}
	for _, c := range cases {
		if got := AppendSocksReply(nil, c.code, c.bound); !bytes.Equal(got, c.want) {
			t.Errorf("reply %d %v = %x, want %x", c.code, c.bound, got, c.want)
		}
	}
}

func port16(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

// pxSocksConnect is a no-auth greeting and a CONNECT to 127.0.0.1:port.
func pxSocksConnect(port uint16) []byte {
	return append([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1}, port16(port)...)
}

func TestSocks5Open(t *testing.T) {
	l := pxListen(t)
	closed := pxClosedPort(t)
	ctx := context.Background()
	refused := func(code byte) []byte { return AppendSocksReply(nil, code, netip.AddrPort{}) }
	userPass := func(u, p string) []byte {
		b := append([]byte{1, byte(len(u))}, u...)
		b = append(b, byte(len(p)))
		return append(b, p...)
	}
	cases := []struct {
		name   string
		allow  []string
		users  map[string]string
		in     []byte
		want   []byte // everything the app gets before the splice (success: without the reply)
		ok     bool   // a real target connection
		closed bool   // answered, then closed
		left   int
	}{
		{name: "connect ipv4", allow: []string{"127.0.0.0/8"}, in: append(pxSocksConnect(l.port()), "early"...), want: []byte{5, 0}, ok: true, left: 5},
		{name: "connect domain", allow: []string{"127.0.0.0/8"}, in: append(append([]byte{5, 1, 0, 5, 1, 0, 3, 9}, "localhost"...), port16(l.port())...), want: []byte{5, 0}, ok: true},
		{name: "connect ipv4-mapped ipv6", allow: []string{"127.0.0.0/8"}, in: append(append([]byte{5, 1, 0, 5, 1, 0, 4}, netip.MustParseAddr("::ffff:127.0.0.1").AsSlice()...), port16(l.port())...), want: []byte{5, 0}, ok: true},
		{name: "many methods", allow: []string{"127.0.0.0/8"}, in: append([]byte{5, 3, 1, 2, 0}, pxSocksConnect(l.port())[3:]...), want: []byte{5, 0}, ok: true},
		{name: "default deny", in: pxSocksConnect(l.port()), want: append([]byte{5, 0}, refused(2)...), closed: true},
		{name: "deny name to loopback", in: append(append([]byte{5, 1, 0, 5, 1, 0, 3, 9}, "localhost"...), port16(l.port())...), want: append([]byte{5, 0}, refused(2)...), closed: true},
		{name: "refused", allow: []string{"127.0.0.0/8"}, in: pxSocksConnect(closed), want: append([]byte{5, 0}, refused(5)...), closed: true},
		{name: "unknown host", in: append(append([]byte{5, 1, 0, 5, 1, 0, 3, 14}, "no-such.invalid"[:14]...), 0, 80), want: append([]byte{5, 0}, refused(4)...), closed: true},
		{name: "bind", in: append([]byte{5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1}, 0, 80), want: append([]byte{5, 0}, refused(7)...), closed: true},
		{name: "udp associate", in: []byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}, want: append([]byte{5, 0}, refused(7)...), closed: true},
		{name: "unknown command", in: []byte{5, 1, 0, 5, 9, 0, 1, 0, 0, 0, 0, 0, 0}, want: append([]byte{5, 0}, refused(7)...), closed: true},
		{name: "bad atyp", in: []byte{5, 1, 0, 5, 1, 0, 7, 1, 2, 3, 4}, want: append([]byte{5, 0}, refused(8)...), closed: true, left: 4},
		{name: "request version 4", in: []byte{5, 1, 0, 4, 1, 0, 1, 0, 0, 0, 0, 0, 0}, want: append([]byte{5, 0}, refused(1)...), closed: true, left: 6},
		{name: "no acceptable method", in: []byte{5, 1, 2}, want: []byte{5, 0xff}, closed: true},
		{name: "no methods", in: []byte{5, 0}, want: []byte{5, 0xff}, closed: true},
		{name: "auth ok", allow: []string{"127.0.0.0/8"}, users: map[string]string{"alice": "s3cret"},
			in: append(append([]byte{5, 2, 0, 2}, userPass("alice", "s3cret")...), pxSocksConnect(l.port())[3:]...), want: []byte{5, 2, 1, 0}, ok: true},
		{name: "auth wrong password", users: map[string]string{"alice": "s3cret"},
			in: append(append([]byte{5, 1, 2}, userPass("alice", "wrong")...), pxSocksConnect(l.port())[3:]...), want: []byte{5, 2, 1, 1}, closed: true, left: 10},
		{name: "auth unknown user", users: map[string]string{"alice": "s3cret"},
			in: append([]byte{5, 1, 2}, userPass("bob", "s3cret")...), want: []byte{5, 2, 1, 1}, closed: true},
		{name: "auth bad subversion", users: map[string]string{"alice": "s3cret"},
			in: []byte{5, 1, 2, 5, 1, 'a', 1, 'b'}, want: []byte{5, 2, 1, 1}, closed: true, left: 3},
		{name: "auth required, none offered", users: map[string]string{"alice": "s3cret"},
			in: pxSocksConnect(l.port()), want: []byte{5, 0xff}, closed: true, left: 10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			acl, err := newACL(c.allow, nil)
			if err != nil {
				t.Fatal(err)
			}
			d := NewDialer(acl, 2*time.Second, 0)
			fe := &Socks5{Dialer: d, Users: c.users}
			r := bytes.NewReader(c.in)
			s := &pxStream{r: iotest.OneByteReader(r)}
			conn, err := fe.Open(ctx, s)
			out := s.written()
			switch {
			case c.ok:
				if err != nil {
					t.Fatalf("Open: %v (app got %x)", err, out)
				}
				defer conn.Close()
				if _, isClosed := conn.(closedConn); isClosed {
					t.Fatalf("got a refusal: %x", out)
				}
				bound := conn.LocalAddr().(*net.TCPAddr).AddrPort()
				want := AppendSocksReply(append([]byte(nil), c.want...), 0, bound)
				if !bytes.Equal(out, want) {
					t.Errorf("app got %x, want %x", out, want)
				}
			case c.closed:
				if err != nil {
					t.Fatalf("Open: %v, want an answer and a close", err)
				}
				if _, isClosed := conn.(closedConn); !isClosed {
					conn.Close()
					t.Fatalf("got a target connection, want a refusal")
				}
				if !bytes.Equal(out, c.want) {
					t.Errorf("app got %x, want %x", out, c.want)
				}
			}
			if r.Len() != c.left {
				t.Errorf("%d bytes left unread, want %d", r.Len(), c.left)
			}
		})
	}
	l.waitAccepted(t, 5)
}

func TestSocks5ResetsNonSocks(t *testing.T) {
	fe := &Socks5{Dialer: NewDialer(nil, time.Second, 0)}
	for _, in := range [][]byte{{4, 1, 0, 80, 127, 0, 0, 1, 0}, []byte("GET / HTTP/1.1\r\n\r\n"), {}, {5}, {5, 1, 0, 5, 1}} {
		s := &pxStream{r: bytes.NewReader(in)}
		c, err := fe.Open(context.Background(), s)
		if err == nil {
			c.Close()
			t.Errorf("%q: Open succeeded, want an error (reset)", in)
		}
	}
}

// The handshake timeout, in a synctest bubble: the clock is fake, so the
// timeout is exact and the test does not wait for it.
func TestSocks5HandshakeTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pr, pw := io.Pipe()
		fe := &Socks5{Dialer: NewDialer(nil, time.Second, 0), HandshakeTimeout: 50 * time.Millisecond}
		go func() { _, _ = pw.Write([]byte{5, 1}) }() // a greeting that never ends
		start := time.Now()
		_, err := fe.Open(context.Background(), &pxStream{r: pr})
		if !errors.Is(err, errHandshakeTimeout) {
			t.Fatalf("Open: %v, want the handshake timeout", err)
		}
		if el := time.Since(start); el != 50*time.Millisecond {
			t.Fatalf("timeout after %v, want 50ms", el)
		}
		// The stage resets the stream now, which ends the pending Read.
		_ = pw.CloseWithError(net.ErrClosed)
		_ = pr.Close()

		// ctx ends the wait as well.
		pr2, pw2 := io.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		fe.HandshakeTimeout = time.Minute
		start = time.Now()
		if _, err := fe.Open(ctx, &pxStream{r: pr2}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Open with cancelled ctx: %v", err)
		}
		if el := time.Since(start); el != 20*time.Millisecond {
			t.Fatalf("cancelled after %v, want 20ms", el)
		}
		_ = pw2.Close()
	})
}

func FuzzReadSocksRequest(f *testing.F) {
	f.Add([]byte{5, 1, 0, 1, 127, 0, 0, 1, 0, 80})
	f.Add(append([]byte{5, 1, 0, 3, 11}, "example.org\x01\xbb"...))
	f.Add(append(append([]byte{5, 1, 0, 4}, make([]byte, 16)...), 0, 80))
	f.Add([]byte{5, 2, 0, 9})
	f.Add([]byte{5, 1, 0, 3, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		req, err := readSocksRequest(r)
		if err != nil {
			return
		}
		consumed := b[:len(b)-r.Len()]
		norm := append([]byte(nil), consumed...)
		norm[2] = 0
		if enc := AppendSocksRequest(nil, req); !bytes.Equal(enc, norm) {
			t.Fatalf("read %x as %+v, which encodes as %x", consumed, req, enc)
		}
		if !validHost(req.Host) {
			t.Fatalf("accepted invalid host %q", req.Host)
		}
	})
}

// FuzzSocks5Handshake runs greeting, authentication and request parsing
// (everything but the dial) on arbitrary input.
func FuzzSocks5Handshake(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80}, false)
	f.Add([]byte{5, 1, 2, 1, 1, 'u', 1, 'p', 5, 1, 0, 3, 1, 'a', 0, 80}, true)
	f.Add([]byte{5, 1, 2, 1, 1, 'u', 1, 'x'}, true)
	f.Add([]byte{5, 0}, false)
	f.Fuzz(func(t *testing.T, b []byte, auth bool) {
		fe := &Socks5{}
		if auth {
			fe.Users = map[string]string{"u": "p"}
		}
		r := bytes.NewReader(b)
		s := &pxStream{r: r}
		out, err := fe.handshake(s)
		w := s.written()
		if len(w) > 4 {
			t.Fatalf("handshake wrote %d bytes: %x", len(w), w)
		}
		if err == nil && !out.done && out.code == 0 {
			if out.req.Cmd != SocksCmdConnect || !validHost(out.req.Host) {
				t.Fatalf("would dial %+v", out.req)
			}
			if auth && !bytes.Equal(w, []byte{5, 2, 1, 0}) {
				t.Fatalf("dial without authentication: wrote %x", w)
			}
		}
	})
}
