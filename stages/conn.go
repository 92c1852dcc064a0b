package stages

import "net"

// CloseWrite half-closes c (sends FIN while it can still read) where c
// supports it, as TCP, TLS and the striped multi-TCP backend do; on any
// other connection it does nothing.
func CloseWrite(c any) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// resetConn closes c so that its peer sees a reset (SO_LINGER 0 on TCP),
// not a clean end.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
