package frontend

import (
	"context"
	"net"
	"time"

	"usocks/stages"
)

// DefaultDialTimeout bounds a frontend's connect to its target.
const DefaultDialTimeout = 10 * time.Second

// Redirect is the frontend that sends every stream to one fixed address.
type Redirect struct {
	Addr    string // host:port
	Timeout time.Duration
}

// Open dials the fixed target, within the session's Gate.
func (r *Redirect) Open(ctx context.Context, _ stages.StreamIO) (net.Conn, error) {
	t := r.Timeout
	if t == 0 {
		t = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	done, err := gateFrom(ctx).Dial(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	// No TCP keepalive on target connections: streams have their own idle
	// timeouts, and the four setsockopt calls per dial cost stream setup.
	d := net.Dialer{KeepAlive: -1}
	return d.DialContext(ctx, "tcp", r.Addr)
}
