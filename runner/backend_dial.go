package runner

import (
	"context"
	"fmt"
	"net"

	"usocks/stages"
)

// The client's side of the wrapped backends (tls, ws, wss): what runs
// between connect and the v2 handshake.

// dialWrapped runs the TLS handshake (tls backend) and the WebSocket
// upgrade (a ws path) on a fresh connection to the server.
func (c *Client) dialWrapped(ctx context.Context, raw net.Conn) (net.Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, wrapTimeout)
	defer cancel()
	conn := raw
	b := &c.cfg.Backend
	if c.tls != nil {
		tc, err := stages.DialBrowserTLS(hctx, raw, c.tls, b.Fingerprint, b.Path != "")
		if err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", c.cfg.ServerAddr(), err)
		}
		conn = tc
	}
	if b.Path == "" {
		return conn, nil
	}
	host := b.Host
	if host == "" {
		host = b.TLSServerName
	}
	if host == "" {
		host = b.Server
	}
	wc, err := stages.DialWS(hctx, conn, host, b.Path)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return wc, nil
}
