package stages

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawSock reads and writes a TCP socket with raw system calls (no
// entersyscall/exitsyscall), waiting in the runtime's poller as net.Conn
// does when the socket is not ready.
//
// Why: the socket is non-blocking, so a read or write returns at once;
// but every system call that goes through the scheduler's syscall path
// wakes the runtime's monitor thread when the process was idle, and a
// write that takes the kernel long (loopback delivers to the reader
// inline) lets the monitor hand the P to another thread. On a process
// limited to one CPU each round trip then paid several extra context
// switches: the profile of a 64-byte echo through the tunnel showed a
// fifth of the client's time in the monitor's wake-ups, sleeps and
// hand-offs. A raw call on a non-blocking socket blocks nothing else.
//
// Deadlines, Close and errors behave as with net.Conn (the poller's wait
// returns them), wrapped in *net.OpError.
type rawSock struct {
	rc syscall.RawConn
	// The state of the call in progress on each side, and the functions
	// handed to rc, bound once in rawSockOn: a closure made per call
	// escapes (rc is an interface) and cost allocations on every read
	// and write. Each side has one goroutine at a time (the up pump or
	// the backend reader reads, the down pump or the backend writer
	// writes), so the sides share nothing.
	rd     rawReadCall
	readFn func(fd uintptr) bool
	wr     rawWriteCall
	wrFn   func(fd uintptr) bool
	shutFn func(fd uintptr)
	shutEr error
}

// rawReadCall is a read in progress: into p (Read), or into a pooled
// buffer of want bytes taken once data is there (readBuf).
type rawReadCall struct {
	p    []byte
	want int
	buf  *payloadBuf
	n    int
	err  error
}

// rawWriteCall is a vectored write in progress.
type rawWriteCall struct {
	bufs  *net.Buffers
	iovs  []unix.Iovec
	total int64
	err   error
}

// rawSocketsOn is the fast path's switch: on unless the environment has
// USOCKS_RAW_SOCKETS=0 (then every socket takes net.Conn's path). The
// corruption of resumed sessions once blamed on this path was a payload
// buffer released twice by the decrypt stage, which happened with the
// path off too; it showed only without the race detector, whose
// sync.Pool drops a quarter of what is put back.
var rawSocketsOn = os.Getenv("USOCKS_RAW_SOCKETS") != "0"

// newRawSock returns a rawSock for c when c is a plain TCP socket and the
// race detector is off (raw calls are invisible to it, so a -race build
// keeps the ordinary path); nil otherwise.
func newRawSock(c any) *rawSock {
	if raceEnabled || !rawSocketsOn {
		return nil
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rawSockOn(rc)
}

// rawSockOn makes the rawSock of rc.
func rawSockOn(rc syscall.RawConn) *rawSock {
	r := &rawSock{rc: rc}
	r.readFn = r.rd.read
	r.wrFn = r.wr.write
	r.shutFn = r.shutdown
	return r
}

// Read reads into p once data is available.
func (r *rawSock) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rd = rawReadCall{p: p}
	err := r.rc.Read(r.readFn)
	n, serr := r.rd.n, r.rd.err
	r.rd = rawReadCall{}
	if err == nil {
		err = serr
	}
	return n, err
}

// readBuf reads up to n bytes into a pooled buffer taken only once the
// socket has data (getBuf(n), returned if the read finds nothing), so a
// stream waiting for its app holds no buffer. buf is nil when m is 0.
func (r *rawSock) readBuf(n int) (buf *payloadBuf, m int, err error) {
	r.rd = rawReadCall{want: n}
	err = r.rc.Read(r.readFn)
	buf, m, serr := r.rd.buf, r.rd.n, r.rd.err
	r.rd = rawReadCall{}
	if err == nil {
		err = serr
	}
	if m == 0 {
		putBuf(buf)
		buf = nil
	}
	return buf, m, err
}

// read is the function rc.Read calls: one read(2); false when the socket
// has nothing yet (rc waits in the poller and calls it again).
func (c *rawReadCall) read(fd uintptr) (done bool) {
	p := c.p
	if c.want > 0 {
		if c.buf == nil {
			c.buf = getBuf(c.want)
		}
		p = c.buf.B[:c.want]
	}
	c.n, done, c.err = rawRead(fd, p)
	if !done && c.buf != nil {
		putBuf(c.buf)
		c.buf = nil
	}
	return done
}

// rawRead is one read(2) of fd into p (not empty); done is false when the
// socket has nothing to read yet.
func rawRead(fd uintptr, p []byte) (n int, done bool, err error) {
	for {
		m, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			if m == 0 {
				return 0, true, io.EOF
			}
			return int(m), true, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, false, nil
		default:
			return 0, true, os.NewSyscallError("read", e)
		}
	}
}

// Write writes all of p.
func (r *rawSock) Write(p []byte) (int, error) {
	bufs := net.Buffers{p}
	n, err := r.writev(&bufs)
	return int(n), err
}

// writev writes every buffer of *bufs (consuming it, as
// net.Buffers.WriteTo does) with writev calls.
func (r *rawSock) writev(bufs *net.Buffers) (int64, error) {
	r.wr.bufs, r.wr.total, r.wr.err = bufs, 0, nil
	err := r.rc.Write(r.wrFn)
	total, serr := r.wr.total, r.wr.err
	r.wr.bufs, r.wr.err = nil, nil
	clear(r.wr.iovs[:cap(r.wr.iovs)]) // no stale pointers into released buffers
	if err == nil {
		err = serr
	}
	return total, err
}

// write is the function rc.Write calls: writev(2) until everything is
// written (true), the socket is full (false: rc waits in the poller and
// calls it again) or an error (true, c.err set).
func (c *rawWriteCall) write(fd uintptr) bool {
	bufs := c.bufs
	for len(*bufs) > 0 {
		c.iovs = c.iovs[:0]
		for _, b := range *bufs {
			if len(b) == 0 {
				continue
			}
			c.iovs = append(c.iovs, unix.Iovec{Base: &b[0], Len: uint64(len(b))})
			if len(c.iovs) == 1024 { // IOV_MAX
				break
			}
		}
		if len(c.iovs) == 0 {
			*bufs = (*bufs)[:0]
			break
		}
		m, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&c.iovs[0])), uintptr(len(c.iovs)))
		switch e {
		case 0:
			c.total += int64(m)
			consume(bufs, int64(m))
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			c.err = os.NewSyscallError("writev", e)
			return true
		}
	}
	return true
}

// closeWrite half-closes the socket (shutdown(SHUT_WR): FIN after what
// was written), as TCPConn.CloseWrite does, with a raw call: on loopback
// the FIN is delivered within the call, long enough for the runtime's
// monitor to hand the P to another thread.
func (r *rawSock) closeWrite() error {
	r.shutEr = nil
	err := r.rc.Control(r.shutFn)
	if err == nil {
		err = r.shutEr
	}
	return err
}

// shutdown is the function closeWrite hands to rc.Control.
func (r *rawSock) shutdown(fd uintptr) {
	if _, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, fd, unix.SHUT_WR, 0); e != 0 {
		r.shutEr = os.NewSyscallError("shutdown", e)
	}
}

// consume drops n written bytes from the front of *bufs.
func consume(bufs *net.Buffers, n int64) {
	for len(*bufs) > 0 {
		l := int64(len((*bufs)[0]))
		if l > n {
			(*bufs)[0] = (*bufs)[0][n:]
			return
		}
		n -= l
		*bufs = (*bufs)[1:]
	}
}
