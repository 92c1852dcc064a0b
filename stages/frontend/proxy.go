package frontend

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
)

// What follows is shared by the proxy frontends.

// defaultHandshakeTimeout bounds how long a proxy frontend waits for the
// app's request (and authentication) before it resets the stream.
const defaultHandshakeTimeout = 30 * time.Second

// errHandshakeTimeout is a request that did not arrive in time.
var errHandshakeTimeout = errors.New("proxy request not received in time")

// readRequest runs f, the part of a proxy handshake that reads the app's
// request from the stream, bounded by timeout and ctx. stages.StreamIO has no
// read deadline, so f runs in its own goroutine; when the time is up,
// readRequest returns an error, the stage resets the stream (as it does
// for every failed Open) and that ends f's pending Read.
func readRequest[T any](ctx context.Context, timeout time.Duration, f func() (T, error)) (T, error) {
	if timeout <= 0 {
		timeout = defaultHandshakeTimeout
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			if v := recover(); v != nil {
				// A panic in one request's parser fails that stream
				// only (the stage logs it with this stack).
				r.err = stages.Recovered(v)
			}
			ch <- r
		}()
		r.v, r.err = f()
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	var zero T
	select {
	case r := <-ch:
		return r.v, r.err
	case <-t.C:
		return zero, errHandshakeTimeout
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// checkCredentials reports whether user and pass match an entry of users.
// The comparison takes the same time whether or not the user exists and
// however long the strings are.
func checkCredentials(users map[string]string, user, pass string) bool {
	want, known := users[user]
	a := sha256.Sum256([]byte(pass))
	b := sha256.Sum256([]byte(want))
	eq := subtle.ConstantTimeCompare(a[:], b[:]) == 1
	return known && eq
}

// validHost reports whether h can be dialled as a host: an IP literal
// without zone, or a DNS name of letters, digits, '-', '_' and '.', with
// no empty label, at most 253 characters (plus a final dot).
func validHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0
}

// closedConn is what a proxy frontend returns after it has answered the
// app with an error: a target that is already at EOF and discards what it
// is sent. The stage then ends the stream with a FIN after the reply,
// instead of an RST that could overtake the reply and destroy it.
type closedConn struct{}

var closedAddr = &net.TCPAddr{IP: net.IPv4zero}

func (closedConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (closedConn) Write(p []byte) (int, error)      { return len(p), nil }
func (closedConn) Close() error                     { return nil }
func (closedConn) CloseWrite() error                { return nil }
func (closedConn) LocalAddr() net.Addr              { return closedAddr }
func (closedConn) RemoteAddr() net.Addr             { return closedAddr }
func (closedConn) SetDeadline(time.Time) error      { return nil }
func (closedConn) SetReadDeadline(time.Time) error  { return nil }
func (closedConn) SetWriteDeadline(time.Time) error { return nil }

// writeEarly sends bytes the frontend already took from the stream (the
// app's data that followed its request) to the target before the splice.
func writeEarly(c net.Conn, b []byte, timeout time.Duration) error {
	if len(b) == 0 {
		return nil
	}
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.Write(b)
	_ = c.SetWriteDeadline(time.Time{})
	return err
}

var discardLog = func() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}()

// frontendLog is l, or a logger that discards when l is nil.
func frontendLog(l *logrus.Entry) *logrus.Entry {
	if l == nil {
		return discardLog
	}
	return l
}
