package stages

import (
	"io"
	"net"
	"time"
)

// CloseWrite half-closes c (sends FIN while it can still read) where c
// supports it, as TCP, TLS and the striped multi-TCP backend do; on any
// other connection it does nothing.
func CloseWrite(c any) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// CanCloseWrite says whether c can half-close (CloseWrite does something).
func CanCloseWrite(c any) bool {
	_, ok := c.(interface{ CloseWrite() error })
	return ok
}

// resetConn closes c so that its peer sees a reset (SO_LINGER 0 on TCP),
// not a clean end.
func resetConn(c net.Conn) {
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// LingerTimeout bounds how long LingerClose keeps reading after its FIN.
const LingerTimeout = 2 * time.Second

// discardBuf is the size of the buffer a drain reads into: what the peer
// sends is thrown away, so a drain's memory does not grow with its input.
const discardBuf = 2048

// discard reads and throws away c's input until EOF, an error or the read
// deadline, in a small buffer.
func discard(c io.Reader) {
	buf := make([]byte, discardBuf)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// LingerClose ends a connection so that what was sent on it arrives: FIN
// (where c supports half-close), then read and discard until the peer's
// FIN or for at most linger, then close. Closing a socket with unread
// input makes the kernel send RST, which destroys data still in flight
// towards the peer (a last record). A peer that keeps sending for longer
// than linger after our FIN still gets RST.
func LingerClose(c net.Conn, linger time.Duration) {
	_ = CloseWrite(c)
	_ = c.SetReadDeadline(time.Now().Add(linger))
	discard(c)
	_ = c.Close()
}
