package stages

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync/atomic"

	"usocks/wire"
)

// Frontends (server side): where a new stream goes. The demux starts one
// actor per SYN; the actor calls Frontend.Open and splices the stream with
// the connection it returns. A failed Open resets that one stream; the
// tunnel lives on. The frontends themselves (redirect, SOCKS5, HTTP proxy,
// access rules, UDP associations, the TLS decoy) live in package frontend;
// the tunnel layer knows them only through the interfaces below.

// StreamIO is the stream as a frontend sees it before the target is
// connected: a proxy frontend reads the app's request from it and writes
// its reply to it. Reads and writes respect the stream's flow control.
type StreamIO interface {
	io.Reader
	io.Writer
	ID() uint16
}

// Frontend connects a new stream to its target.
type Frontend interface {
	// Open returns the connection to splice with the stream. It must not
	// read more from s than its own protocol needs: whatever it does not
	// read is passed to the target.
	Open(ctx context.Context, s StreamIO) (net.Conn, error)
}

// FrontendSource is a Frontend that may change while sessions run: the
// demux asks it for the current one at every SYN and uses that one for
// the stream (its Open, and whether it is a TargetFrontend).
type FrontendSource interface {
	Frontend
	Current() Frontend
}

// LiveFrontend is a Frontend that a config reload can replace while
// sessions run: the demux looks up the current one for every SYN, so new
// streams use the new settings (access rules, target) and running ones
// keep the frontend that opened them.
type LiveFrontend struct {
	p atomic.Pointer[Frontend]
}

// NewLiveFrontend returns a LiveFrontend serving fe.
func NewLiveFrontend(fe Frontend) *LiveFrontend {
	l := new(LiveFrontend)
	l.Set(fe)
	return l
}

// Set makes fe the frontend of the streams opened from now on.
func (l *LiveFrontend) Set(fe Frontend) { l.p.Store(&fe) }

// Current is the frontend new streams use.
func (l *LiveFrontend) Current() Frontend { return *l.p.Load() }

// Open opens s with the current frontend.
func (l *LiveFrontend) Open(ctx context.Context, s StreamIO) (net.Conn, error) {
	return l.Current().Open(ctx, s)
}

// TargetFrontend is a frontend that also connects streams whose SYN named
// the target (SPEC-v2.md §6e: the client answered the app's proxy request
// itself). A frontend that is not one refuses such streams with RST.
type TargetFrontend interface {
	// OpenTarget connects t, applying the same access rules as Open;
	// t.Addr is the frontend's to keep. Nothing is read from or written
	// to s: every byte on it is the app's data for the target.
	OpenTarget(ctx context.Context, s StreamIO, t wire.Target) (net.Conn, error)
}

// SynTarget is a local connection (client side) whose app has named its
// target already: the demux sends the target in the stream's SYN.
type SynTarget interface {
	net.Conn
	// SynTarget is the encoded target (wire.AppendTarget).
	SynTarget() []byte
}

// DatagramStream is what a stream offers a frontend that serves UDP
// (server side). Every StreamIO the demux hands to Frontend.Open is one.
type DatagramStream interface {
	StreamIO
	// OpenAssociation tells the client, in order after what the stream
	// has sent, that datagrams may flow; it returns the app's datagrams.
	OpenAssociation() (<-chan []byte, error)
	// SendDatagram sends one datagram toward the app; false if dropped.
	SendDatagram(p []byte) bool
}

// DatagramRelay is the client's end of datagram associations: the local
// socket apps send their datagrams to. The demux calls it on its own
// goroutine, so no method may block.
type DatagramRelay interface {
	// Open starts the association of stream id, whose app connected from
	// appIP and has sent the bytes sent so far; send puts one datagram
	// from the app into the tunnel (false: dropped). It returns the bytes
	// the stream delivers to the app to say that the association is ready
	// (the proxy protocol's reply), or nil, opening nothing, when sent is
	// not a request for an association.
	Open(id uint16, appIP netip.Addr, sent []byte, send func([]byte) bool) (reply []byte)
	// Deliver hands one datagram from the peer to the app of stream id,
	// or drops it; p is only valid during the call.
	Deliver(id uint16, p []byte)
	// Close ends the association of stream id.
	Close(id uint16)
}
