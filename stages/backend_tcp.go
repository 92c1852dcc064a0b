package stages

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/sirupsen/logrus"
)

// Backend stages: the only goroutines that touch the backend socket.
//
// BackendReader reads ciphertext in large chunks and hands them on; it ends
// at EOF (closing Out, so the stages above see the end of input) or on an
// error. BackendWriter writes sealed batches; when In is closed it flushes,
// half-closes the socket (TCP FIN after the last record) and returns.

// BackendReader is the backend → decrypt stage.
type BackendReader struct {
	Conn io.Reader
	Out  chan<- Chunk
	Log  *logrus.Entry
	// Tap, if set, sees every chunk read (capture). It must not block.
	Tap func([]byte)

	rd io.Reader // Conn, or its raw socket; set by the first read
}

// Run reads until EOF, error or ctx is done. EOF is not an error: the
// stages above decide whether the end was clean.
func (r *BackendReader) Run(ctx context.Context) error {
	defer close(r.Out)
	for {
		c, ok, err := r.ReadChunk(ctx)
		if !ok {
			return err
		}
		select {
		case r.Out <- c:
		case <-ctx.Done():
			c.Release()
			return ctx.Err()
		}
	}
}

// ReadChunk reads the next chunk: one read of the socket, into a pooled
// buffer (Release gives it back). ok is false at the end of input, with a
// nil error at EOF. Run hands each chunk on through Out; a DecryptV1
// whose From is the reader calls ReadChunk itself, on its own goroutine,
// so that the socket's end comes after the records before it. Like Run
// it waits in the socket's read, which a closed connection ends; one
// caller at a time.
func (r *BackendReader) ReadChunk(ctx context.Context) (c Chunk, ok bool, err error) {
	if r.rd == nil {
		r.rd = r.Conn
		if rs := newRawSock(r.Conn); rs != nil {
			r.rd = rs // see rawSock
		}
	}
	for {
		buf := chunkPool.Get().(*chunkBuf)
		n, err := r.rd.Read(buf[:])
		if n > 0 {
			if r.Tap != nil {
				r.Tap(buf[:n])
			}
			// Data read with an error: the data now, the error (again)
			// on the next call.
			return Chunk{B: buf[:n], buf: buf}, true, nil
		}
		chunkPool.Put(buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Chunk{}, false, nil
			}
			if ctx.Err() != nil {
				return Chunk{}, false, ctx.Err()
			}
			return Chunk{}, false, &BackendError{Op: "read", Err: err}
		}
	}
}

// BackendError is a failure of the backend socket itself.
type BackendError struct {
	Op  string
	Err error
}

func (e *BackendError) Error() string { return "backend " + e.Op + ": " + e.Err.Error() }
func (e *BackendError) Unwrap() error { return e.Err }

// BackendWriter is the encrypt → backend stage.
type BackendWriter struct {
	Conn io.Writer
	In   <-chan Sealed
	Log  *logrus.Entry
	// Tap, if set, sees every batch written (capture). It must not block.
	Tap func([]byte)
	// Release, if set, is called with each batch after it is written, so
	// encrypt can reuse the buffer.
	Release func(Sealed)
	// Retire, if set and closed, makes the writer half-close the socket
	// and return nil between two writes: a write under way completes
	// (rotation of a resumable session retires a link this way).
	Retire <-chan struct{}
}

// Run writes batches until In is closed (then half-closes the socket) or
// ctx is done. Batches that are already queued are gathered into one
// vectored write (writev on TCP).
func (w *BackendWriter) Run(ctx context.Context) error {
	var bufs net.Buffers
	var wb net.Buffers // WriteTo consumes its receiver: a copy of bufs, hoisted so it is allocated once
	var held []Sealed
	write := func(b *net.Buffers) (int64, error) { return b.WriteTo(w.Conn) }
	if rs := newRawSock(w.Conn); rs != nil {
		write = rs.writev // see rawSock
	}
	for {
		var s Sealed
		var ok bool
		select {
		case s, ok = <-w.In:
		case <-w.Retire:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return writeFIN(w.Conn)
		}
		bufs = append(bufs[:0], s.B)
		held = append(held[:0], s)
	gather:
		for len(held) < BatchQueueLen {
			select {
			case s2, ok2 := <-w.In:
				if !ok2 {
					break gather
				}
				bufs = append(bufs, s2.B)
				held = append(held, s2)
			default:
				break gather
			}
		}
		if w.Tap != nil {
			for _, h := range held {
				w.Tap(h.B)
			}
		}
		wb = bufs
		if _, err := write(&wb); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &BackendError{Op: "write", Err: err}
		}
		if w.Release != nil {
			for _, h := range held {
				w.Release(h)
			}
		}
	}
}

// writeFIN sends FIN where the socket supports half-close. A peer that
// has already gone (ENOTCONN) needs no FIN.
func writeFIN(c io.Writer) error {
	if err := CloseWrite(c); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ENOTCONN) {
		return &BackendError{Op: "close", Err: err}
	}
	return nil
}
