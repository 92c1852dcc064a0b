package frontend

import (
	"context"
	"errors"
)

// Gate bounds what the streams of one session may take from the server:
// target dials (how many at once, how many per second) and UDP sockets.
// Frontends are shared by every session, so the server passes each
// session's Gate in the context of Open (WithGate); a context without one
// is not limited here.
//
// A refusal fails that one stream (RST, or the proxy protocol's failure
// reply); the session and its other streams carry on.
type Gate interface {
	// Dial is asked before each target dial, under the dial's deadline;
	// it may wait for a slot until ctx ends. done is called once the
	// dial has finished, whatever its outcome.
	Dial(ctx context.Context) (done func(), err error)
	// Socket is asked before a UDP association opens its socket; done is
	// called once the socket is closed.
	Socket() (done func(), err error)
}

// ErrLimit is a stream refused by a Gate. Errors a Gate returns wrap it.
var ErrLimit = errors.New("limit reached")

type gateKey struct{}

// WithGate returns ctx carrying the session's gate.
func WithGate(ctx context.Context, g Gate) context.Context {
	return context.WithValue(ctx, gateKey{}, g)
}

// gateFrom is ctx's gate, or one that allows everything.
func gateFrom(ctx context.Context) Gate {
	if g, ok := ctx.Value(gateKey{}).(Gate); ok && g != nil {
		return g
	}
	return openGate{}
}

type openGate struct{}

func (openGate) Dial(context.Context) (func(), error) { return func() {}, nil }
func (openGate) Socket() (func(), error)              { return func() {}, nil }
