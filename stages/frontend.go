package stages

import (
	"context"
	"io"
	"net"
	"time"
)

// Frontends (server side): where a new stream goes. The demux starts one
// actor per SYN; the actor calls Frontend.Open and splices the stream with
// the connection it returns. A failed Open resets that one stream; the
// tunnel lives on.

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

// DefaultDialTimeout bounds a frontend's connect to its target.
const DefaultDialTimeout = 10 * time.Second

// Redirect is the frontend that sends every stream to one fixed address.
type Redirect struct {
	Addr    string // host:port
	Timeout time.Duration
}

// Open dials the fixed target.
func (r *Redirect) Open(ctx context.Context, _ StreamIO) (net.Conn, error) {
	t := r.Timeout
	if t == 0 {
		t = DefaultDialTimeout
	}
	// No TCP keepalive on target connections: streams have their own idle
	// timeouts, and the four setsockopt calls per dial cost stream setup.
	d := net.Dialer{Timeout: t, KeepAlive: -1}
	return d.DialContext(ctx, "tcp", r.Addr)
}
