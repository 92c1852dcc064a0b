package stages

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// The WebSocket backend (SPEC-v2.md §3c): the v2 handshake and records are
// the payload of binary WebSocket messages on one HTTP path, so the
// backend can sit behind a TLS-terminating reverse proxy or CDN (bare ws)
// or inside the TLS backend (wss). Message boundaries carry no meaning:
// the stream of payload bytes is the v2 byte stream.

// ErrNotWebSocket means the first request on a connection was not a
// WebSocket upgrade of the tunnel's path: a visitor for the web server.
var ErrNotWebSocket = errors.New("not a websocket upgrade of the tunnel path")

// maxUpgradeHead bounds the upgrade request's head.
const maxUpgradeHead = 16 << 10

// AcceptWS reads one HTTP request from c until deadline. If it is a
// WebSocket upgrade (GET of path with the upgrade headers) it answers 101
// and returns the message stream as a net.Conn. Otherwise it returns
// ErrNotWebSocket (or a read error) and a PrefixConn on c whose Seen holds
// every byte read, for the visitor's web server.
func AcceptWS(c net.Conn, path string, deadline time.Time) (net.Conn, *PrefixConn, error) {
	pc := &PrefixConn{Conn: c, Record: new(bytes.Buffer)}
	_ = c.SetReadDeadline(deadline)
	br := bufio.NewReaderSize(io.LimitReader(pc, maxUpgradeHead), 4096)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, pc, err
	}
	if !isUpgrade(req, path) {
		return nil, pc, ErrNotWebSocket
	}
	_ = c.SetReadDeadline(time.Time{})
	// What bufio read ahead is the start of the tunnel's byte stream.
	ahead, _ := br.Peek(br.Buffered())
	pc.Record = nil
	rest := &PrefixConn{Conn: c, Prefix: append([]byte(nil), ahead...)}
	w := &hijackWriter{conn: rest, header: http.Header{}}
	wc, err := websocket.Accept(w, req, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return nil, pc, err
	}
	return wsConn{websocket.NetConn(context.Background(), wc, websocket.MessageBinary)}, nil, nil
}

// wsConn is the library's message stream, except that a read that fails
// inside a frame returns no bytes: the library hands back what it read of
// the frame before the error still masked (a client's frames are masked),
// and those bytes would reach the record layer as a record that fails
// authentication instead of the backend's end.
type wsConn struct{ net.Conn }

func (c wsConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	return n, err
}

// isUpgrade reports whether req asks for a WebSocket on path.
func isUpgrade(req *http.Request, path string) bool {
	return req.Method == http.MethodGet && req.URL.Path == path &&
		headerHas(req.Header, "Connection", "upgrade") && headerHas(req.Header, "Upgrade", "websocket") &&
		req.Header.Get("Sec-WebSocket-Version") == "13" && req.Header.Get("Sec-WebSocket-Key") != ""
}

func headerHas(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// hijackWriter is the http.ResponseWriter websocket.Accept needs for one
// connection read by hand: it writes the status line and headers when the
// connection is hijacked.
type hijackWriter struct {
	conn   net.Conn
	header http.Header
	code   int
}

func (w *hijackWriter) Header() http.Header         { return w.header }
func (w *hijackWriter) WriteHeader(code int)        { w.code = code }
func (w *hijackWriter) Write(b []byte) (int, error) { return 0, http.ErrNotSupported }

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.code != http.StatusSwitchingProtocols {
		return nil, nil, fmt.Errorf("websocket: status %d before hijack", w.code)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 101 Switching Protocols\r\n")
	_ = w.header.Write(&b)
	b.WriteString("\r\n")
	if _, err := w.conn.Write(b.Bytes()); err != nil {
		return nil, nil, err
	}
	return w.conn, bufio.NewReadWriter(bufio.NewReader(w.conn), bufio.NewWriter(w.conn)), nil
}

// DialWS runs the client's WebSocket upgrade on c (a TCP or TLS
// connection already open to the server or its proxy) for host and path,
// and returns the message stream as a net.Conn.
func DialWS(ctx context.Context, c net.Conn, host, path string) (net.Conn, error) {
	used := false
	tr := &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return nil, errors.New("websocket: one connection only")
			}
			used = true
			return c, nil
		},
		DisableCompression: true,
	}
	defer tr.CloseIdleConnections()
	wc, resp, err := websocket.Dial(ctx, "ws://"+host+path, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("websocket upgrade: %s", resp.Status)
		}
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	nc := wsConn{websocket.NetConn(context.Background(), wc, websocket.MessageBinary)}
	return &addrConn{Conn: nc, local: c.LocalAddr(), remote: c.RemoteAddr()}, nil
}

// addrConn reports the addresses of the connection under a WebSocket
// whose library cannot see them (the client's upgraded response body).
type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c *addrConn) LocalAddr() net.Addr  { return c.local }
func (c *addrConn) RemoteAddr() net.Addr { return c.remote }
