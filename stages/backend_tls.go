package stages

import (
	"bytes"
	"context"
	"fmt"
	"net"

	utls "github.com/refraction-networking/utls"
)

// The TLS backend (SPEC-v2.md §3a): the v2 handshake and records run
// inside a real TLS session, so that the connection looks like HTTPS rather
// than a fully encrypted stream. Whatever is not a usocks v2 client — a
// browser, curl, a prober — gets a web server: the decoy (package frontend).

// ClientMinFlight is the smallest v2 first flight (no padding): the first
// TLS record a usocks v2 client sends is always at least this long, since
// the flight is sent in one write.
const ClientMinFlight = 108

// PrefixConn is a net.Conn that returns Prefix before reading from Conn:
// bytes read ahead to decide what a connection is, given back.
type PrefixConn struct {
	net.Conn
	Prefix []byte
	// Record, if set, receives a copy of every byte read (so that a
	// failed handshake's input can be handed to the decoy).
	Record *bytes.Buffer
}

// Read returns the prefix first.
func (c *PrefixConn) Read(p []byte) (int, error) {
	var n int
	var err error
	if len(c.Prefix) > 0 {
		n = copy(p, c.Prefix)
		c.Prefix = c.Prefix[n:]
	} else {
		n, err = c.Conn.Read(p)
	}
	if c.Record != nil && n > 0 {
		c.Record.Write(p[:n])
	}
	return n, err
}

// Seen is everything read so far and everything read ahead but not yet
// consumed: what a decoy must still treat as the visitor's input.
func (c *PrefixConn) Seen() []byte {
	var b []byte
	if c.Record != nil {
		b = append(b, c.Record.Bytes()...)
	}
	return append(b, c.Prefix...)
}

// CloseWrite half-closes when the wrapped connection can.
func (c *PrefixConn) CloseWrite() error {
	return CloseWrite(c.Conn)
}

// Browsers whose TLS ClientHello the client parrots (uTLS presets): the
// current Chrome preset, with the X25519MLKEM768 key share, and the
// current Firefox preset.
var browsers = map[string]utls.ClientHelloID{
	"chrome":  utls.HelloChrome_Auto,
	"firefox": utls.HelloFirefox_Auto,
}

// BrowserHello is the uTLS preset for a fingerprint name ("" is chrome).
func BrowserHello(name string) (utls.ClientHelloID, error) {
	if name == "" {
		name = "chrome"
	}
	id, ok := browsers[name]
	if !ok {
		return utls.ClientHelloID{}, fmt.Errorf("unknown browser fingerprint %q", name)
	}
	return id, nil
}

// DialBrowserTLS runs a TLS client handshake on raw whose ClientHello is
// the browser's, byte for byte in structure (GREASE, extension set and
// order, cipher suites, groups and key shares, ALPN). With http1Only the
// ALPN offer is http/1.1 alone (and ALPS, which only h2 uses, is left
// out), as a browser opens a WebSocket. cfg must name the server and its
// roots; the certificate is verified.
func DialBrowserTLS(ctx context.Context, raw net.Conn, cfg *utls.Config, browser string, http1Only bool) (net.Conn, error) {
	id, err := BrowserHello(browser)
	if err != nil {
		return nil, err
	}
	var uc *utls.UConn
	if !http1Only {
		uc = utls.UClient(raw, cfg, id)
	} else {
		spec, err := utls.UTLSIdToSpec(id)
		if err != nil {
			return nil, err
		}
		exts := spec.Extensions[:0]
		for _, e := range spec.Extensions {
			switch e := e.(type) {
			case *utls.ALPNExtension:
				e.AlpnProtocols = []string{"http/1.1"}
			case *utls.ApplicationSettingsExtension, *utls.ApplicationSettingsExtensionNew:
				continue
			}
			exts = append(exts, e)
		}
		spec.Extensions = exts
		uc = utls.UClient(raw, cfg, utls.HelloCustom)
		if err := uc.ApplyPreset(&spec); err != nil {
			return nil, err
		}
	}
	if err := uc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return uc, nil
}
