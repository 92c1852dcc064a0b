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
// upgrade (a ws path) on a fresh connection to the server named host.
func (c *Client) dialWrapped(ctx context.Context, raw net.Conn, host string) (net.Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, wrapTimeout)
	defer cancel()
	conn := raw
	b := &c.cfg().Backend
	if c.tls != nil {
		cfg := c.tls
		if b.TLSServerName == "" && cfg.ServerName != host {
			cfg = cfg.Clone() // one of several servers: its own name
			cfg.ServerName = host
		}
		tc, err := stages.DialBrowserTLS(hctx, raw, cfg, b.Fingerprint, b.Path != "")
		if err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", raw.RemoteAddr(), err)
		}
		conn = tc
	}
	if b.Path == "" {
		return conn, nil
	}
	if b.Host != "" {
		host = b.Host
	} else if b.TLSServerName != "" {
		host = b.TLSServerName
	}
	wc, err := stages.DialWS(hctx, conn, host, b.Path)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return wc, nil
}
