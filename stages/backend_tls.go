package stages

import (
	"bytes"
	"net"
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
