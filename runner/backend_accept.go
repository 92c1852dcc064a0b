package runner

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"

	"usocks/stages"
	"usocks/stages/frontend"
)

// The server's side of the wrapped backends (tls, ws, wss): what runs
// between accept and the v2 handshake, and who answers visitors.

// wrapTimeout bounds the TLS handshake and the WebSocket upgrade request.
const wrapTimeout = 10 * time.Second

// tlsHandshakeRecord is the first byte of a TLS connection (a handshake
// record).
const tlsHandshakeRecord = 0x16

// acceptWrapped runs the TLS handshake (tls backend) and the WebSocket
// upgrade (a ws path) on a fresh connection. It returns the connection to
// run the v2 handshake on, and, for the tls backend without a path, the
// PrefixConn that records what the handshake reads (a failed handshake's
// input goes to the web site). A nil connection means the peer is gone
// (visit nil) or is a visitor: visit then answers it as the web site (the
// caller runs it outside its limit on pending handshakes).
func (s *Server) acceptWrapped(ctx context.Context, raw net.Conn, accepted time.Time) (conn net.Conn, pc *stages.PrefixConn, visit func()) {
	deadline := accepted.Add(wrapTimeout)
	conn = raw
	if s.tls != nil {
		// Plain HTTP (or anything but TLS) to the TLS port gets what nginx
		// sends there.
		first := make([]byte, 1)
		_ = raw.SetReadDeadline(deadline)
		if _, err := io.ReadFull(raw, first); err != nil {
			_ = raw.Close()
			return nil, nil, nil
		}
		if first[0] != tlsHandshakeRecord {
			return nil, nil, func() { frontend.ServePlainHTTP(raw, first) }
		}
		tc := tls.Server(&stages.PrefixConn{Conn: raw, Prefix: first}, s.tls)
		hctx, cancel := context.WithDeadline(ctx, deadline)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = raw.Close()
			return nil, nil, nil
		}
		conn = tc
	}
	if path := s.cfg().Backend.Path; path != "" {
		wc, seen, err := stages.AcceptWS(conn, path, deadline)
		if err != nil {
			if errors.Is(err, stages.ErrNotWebSocket) || len(seen.Seen()) > 0 {
				return nil, nil, func() { s.site.Serve(seen.Conn, seen.Seen()) }
			}
			_ = conn.Close()
			return nil, nil, nil
		}
		return wc, nil, nil
	}
	// tls: a usocks v2 first flight is always at least
	// stages.ClientMinFlight bytes in one write, so a shorter first record
	// (an HTTP request line, a probe) is a visitor: it gets the web site
	// at once, without waiting for more.
	_ = conn.SetReadDeadline(deadline)
	buf := make([]byte, 16<<10)
	n, err := conn.Read(buf)
	rec := &stages.PrefixConn{Conn: conn, Prefix: buf[:n], Record: new(bytes.Buffer)}
	if err != nil || n < stages.ClientMinFlight {
		return nil, nil, func() { s.site.Serve(rec.Conn, rec.Seen()) }
	}
	return rec, rec, nil
}
