package frontend

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
)

// Client-side proxy mode (SPEC-v2.md §6e): the client answers the app's
// SOCKS5 or HTTP proxy request itself, with the parsers of the server-side
// frontends, and names the target in the stream's SYN. The app's data
// follows at once, so a new connection costs no tunnel round trip before
// its first byte. The server still decides: its access rules apply, and
// a refused target resets the stream.
//
// The reply is optimistic: SOCKS5 success (bound address 0.0.0.0:0) and
// HTTP "200 Connection established" are sent before the server has dialled,
// as ss-local does. That is what saves the round trip; the price is that
// a denied or unreachable target is not a SOCKS/HTTP error code but a
// connection reset after the reply (apps see "connection reset" instead of
// "connection refused" or "not allowed"). Plain HTTP requests are
// forwarded the same way, their rewritten head as the first data.

// Local proxy types (client `listen.type`).
const (
	LocalSocks5 = "socks5"
	LocalHTTP   = "http"
	LocalMixed  = "mixed" // first byte 5: SOCKS5, else HTTP
)

// LocalProxy answers an app's proxy request on the client.
type LocalProxy struct {
	Type string // LocalSocks5, LocalHTTP or LocalMixed
	// HandshakeTimeout bounds the app's request (default
	// defaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	Log              *logrus.Entry
}

// errLocalRefused is a request that was answered with an error.
var errLocalRefused = errors.New("proxy request refused")

// targetConn is an app connection whose target is known: the tunnel
// sends target in the SYN, then pending, then what the app sends.
type targetConn struct {
	net.Conn
	target  []byte
	pending []byte
}

func (c *targetConn) SynTarget() []byte { return c.target }

func (c *targetConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite and SetLinger reach the TCP connection (half-close, reset).
func (c *targetConn) CloseWrite() error { return stages.CloseWrite(c.Conn) }

func (c *targetConn) SetLinger(sec int) error {
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

// connIO lets the server-side SOCKS5 handshake run on an app connection.
type connIO struct {
	io.Reader
	io.Writer
}

func (connIO) ID() uint16 { return 0 }

// Accept runs the proxy exchange on the app's connection. It returns the
// connection to open a stream for (a stages.SynTarget). On error the
// app has been answered if it could be, and the caller closes conn.
func (p *LocalProxy) Accept(conn net.Conn) (stages.SynTarget, error) {
	t := p.HandshakeTimeout
	if t <= 0 {
		t = defaultHandshakeTimeout
	}
	_ = conn.SetDeadline(time.Now().Add(t))
	defer func() { _ = conn.SetDeadline(time.Time{}) }()
	var r io.Reader = conn
	socks := p.Type == LocalSocks5
	if p.Type == LocalMixed {
		var b [1]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			return nil, err
		}
		socks = b[0] == socksVersion
		r = io.MultiReader(bytes.NewReader(b[:]), conn)
	}
	if socks {
		return p.socks(conn, r)
	}
	return p.http(conn, r)
}

func (p *LocalProxy) socks(conn net.Conn, r io.Reader) (stages.SynTarget, error) {
	out, err := (&Socks5{Log: p.Log}).handshake(connIO{r, conn})
	if err != nil {
		return nil, err
	}
	if out.done {
		return nil, errLocalRefused
	}
	var target []byte
	if out.code == 0 {
		if target, err = EncodeTarget(out.req.Host, out.req.Port); err != nil {
			out.code = SocksGeneralFailure
		}
	}
	if out.code != 0 {
		_, _ = conn.Write(AppendSocksReply(nil, out.code, netip.AddrPort{}))
		return nil, fmt.Errorf("%w: socks5 reply %d", errLocalRefused, out.code)
	}
	if _, err := conn.Write(AppendSocksReply(nil, SocksSucceeded, netip.AddrPort{})); err != nil {
		return nil, err
	}
	return &targetConn{Conn: conn, target: target}, nil
}

func (p *LocalProxy) http(conn net.Conn, r io.Reader) (stages.SynTarget, error) {
	req, rest, err := readHTTPHead(r)
	var t proxyTarget
	if err == nil {
		t, err = routeHTTPRequest(req)
	}
	var target []byte
	if err == nil {
		if target, err = EncodeTarget(t.Host, t.Port); err != nil {
			err = httpErr(400, "invalid target")
		}
	}
	var he *httpError
	if errors.As(err, &he) {
		_, _ = conn.Write(appendHTTPError(nil, he.Status, he.Msg))
		return nil, fmt.Errorf("%w: %v", errLocalRefused, err)
	}
	if err != nil {
		return nil, err
	}
	if t.Connect {
		if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			return nil, err
		}
	} else {
		rest = append(t.Head, rest...)
	}
	return &targetConn{Conn: conn, target: target, pending: rest}, nil
}
