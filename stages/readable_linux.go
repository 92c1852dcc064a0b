package stages

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// waitReadable blocks until c has data (or EOF/error) to read, without
// holding a buffer: idle streams then cost no payload memory. It reports
// false when it cannot wait this way; the caller just reads.
func waitReadable(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err != unix.EAGAIN && err != unix.EWOULDBLOCK && err != unix.EINTR
	})
	return err == nil
}
