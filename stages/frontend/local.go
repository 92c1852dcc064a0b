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
// app has been answered if it could be, and the caller closes conn. A
// panic in the exchange fails this connection only: it is logged with its
// stack and returned as a *stages.PanicError.
func (p *LocalProxy) Accept(conn net.Conn) (tc stages.SynTarget, err error) {
	defer func() {
		if v := recover(); v != nil {
			pe := stages.Recovered(v)
			if p.Log != nil {
				p.Log.WithFields(logrus.Fields{"panic": fmt.Sprint(v), "stack": string(pe.Stack)}).
					Error("panic in a client-side proxy request: closing that connection")
			}
			tc, err = nil, pe
		}
	}()
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
	if !t.Connect {
		// One request per connection, as on the server (httpplain.go).
		body := newBodyEnd(t.Body)
		n, err := body.take(rest)
		if err != nil {
			_, _ = conn.Write(appendHTTPError(nil, 400, "malformed chunked request body"))
			return nil, fmt.Errorf("%w: %v", errLocalRefused, err)
		}
		tc := &targetConn{Conn: conn, target: target, pending: append(t.Head, rest[:n]...)}
		return &localPlainConn{targetConn: tc, body: body}, nil
	}
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		return nil, err
	}
	return &targetConn{Conn: conn, target: target, pending: rest}, nil
}

// localPlainConn is the app's side of a client-side plain request, the
// mirror of plainConn: reads (the app's bytes) give the request and its
// body, and nothing after them (later bytes are read and discarded, so
// the app's connection is not half-closed under the origin); writes (the
// origin's bytes) carry a response head rewritten to say
// "Connection: close".
type localPlainConn struct {
	*targetConn
	body *bodyEnd
	head []byte // the origin's bytes while a head is incomplete
	pass bool   // the final response head went out
}

func (c *localPlainConn) Read(p []byte) (int, error) {
	for {
		if len(c.pending) > 0 {
			return c.targetConn.Read(p)
		}
		n, err := c.Conn.Read(p)
		if !c.body.done() && n > 0 {
			k, berr := c.body.take(p[:n])
			if berr != nil {
				return 0, berr
			}
			if k > 0 {
				return k, nil
			}
		}
		if err != nil {
			return 0, err
		}
	}
}

func (c *localPlainConn) Write(p []byte) (int, error) {
	if c.pass {
		return c.Conn.Write(p)
	}
	if len(c.head)+len(p) > maxResponseHead {
		return 0, errResponseHead
	}
	c.head = append(c.head, p...)
	var out []byte
	for !c.pass {
		end := headEnd(c.head)
		if end < 0 {
			break
		}
		h, final := rewriteResponseHead(c.head[:end])
		out = append(out, h...)
		c.head = c.head[end:]
		if final {
			c.pass = true
			out = append(out, c.head...)
			c.head = nil
		}
	}
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// CloseWrite passes on what the origin sent inside an unfinished head,
// then the origin's FIN.
func (c *localPlainConn) CloseWrite() error {
	if len(c.head) > 0 {
		_, _ = c.Conn.Write(c.head)
		c.head, c.pass = nil, true
	}
	return c.targetConn.CloseWrite()
}
