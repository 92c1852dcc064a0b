package stages

import (
	"errors"
	"fmt"
	"net"
	"runtime/debug"

	"github.com/sirupsen/logrus"
)

// Panic isolation. A panic in one stream's code — its frontend opening it
// (SOCKS5, HTTP, redirect, the client's SYN), or one of its pumps — resets
// that stream only: the actor recovers it, logs it at error level with
// the stack, sends RST and resets the local socket; the session and its
// other streams go on. Frontends that run part of their work on a
// goroutine of their own recover there and return a *PanicError from
// Open, which the actor treats the same way.
//
// A panic elsewhere (demux, mux, record and backend stages) is a session
// matter and is not recovered here: errgroup does not recover panics on
// purpose, and a broken session must not limp on.
//
// A panic in the middle of a transition (while the stream's mutex is
// held) would leave the stream locked; transitions are small and do not
// call out, so the recovered panics are the ones in frontend and pump
// code, which hold no stream lock.

// PanicError is a panic recovered in one stream's code.
type PanicError struct {
	Value any
	Stack []byte // the panicking goroutine's stack
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Recovered wraps the value of recover() with the current stack. Call it
// in the deferred function that recovered, so the stack shows the panic.
func Recovered(v any) *PanicError { return &PanicError{Value: v, Stack: debug.Stack()} }

// guard runs one part of the actor (what: "up", "down"); a panic in it
// resets the stream.
func (s *stream) guard(what string, f func()) {
	defer func() {
		if v := recover(); v != nil {
			s.panicked(what, Recovered(v))
			s.abort(true)
		}
	}()
	f()
}

// guardOpen calls open, turning a panic in it into a *PanicError.
func guardOpen(open func() (net.Conn, error)) (c net.Conn, err error) {
	defer func() {
		if v := recover(); v != nil {
			c, err = nil, Recovered(v)
		}
	}()
	return open()
}

// panicked logs a recovered panic of this stream.
func (s *stream) panicked(what string, p *PanicError) {
	s.logger().WithFields(logrus.Fields{"in": what, "panic": fmt.Sprint(p.Value), "stack": string(p.Stack)}).
		Error("panic in a stream: resetting it, the session goes on")
}

// asPanic returns err's *PanicError, if it has one.
func asPanic(err error) (*PanicError, bool) {
	var p *PanicError
	ok := errors.As(err, &p)
	return p, ok
}
