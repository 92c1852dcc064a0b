package runner

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"usocks/stages"
	"usocks/wire"
)

// Writing captures: the bounded queue, the writer goroutine and the taps a
// session sets on its stages. The file format is in captureformat.go.

// Capture is one capture file being written: a bounded queue and the
// goroutine that drains it. It is safe for concurrent use.
type Capture struct {
	hdr   CaptureHeader
	start time.Time
	w     io.WriteCloser

	ch      chan *CaptureEvent
	queued  atomic.Int64 // bytes waiting in ch
	dropped atomic.Int64
	nextID  atomic.Int64
	stop    chan struct{}
	done    chan struct{}
	closed  atomic.Bool
	err     error // first write error (writer goroutine; read after done)

	// maxBytes caps the file: events past it are dropped and counted in
	// the closing line.
	maxBytes int64
}

// DefaultCaptureMax is the default size cap of a capture file.
const DefaultCaptureMax = 1 << 30

// OpenCapture creates (or truncates) the file at path, readable by its
// owner only, and starts its writer.
func OpenCapture(path string, protocol, role string, plaintext bool, maxBytes int64) (*Capture, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	return NewCapture(f, protocol, role, plaintext, maxBytes), nil
}

// NewCapture starts a capture writing to w, at most maxBytes of it
// (≤ 0: DefaultCaptureMax); Close closes w.
func NewCapture(w io.WriteCloser, protocol, role string, plaintext bool, maxBytes int64) *Capture {
	now := time.Now()
	c := &Capture{
		hdr:   CaptureHeader{Version: CaptureVersion, Protocol: protocol, Role: role, Plaintext: plaintext, Start: now},
		start: now,
		w:     w,
		ch:    make(chan *CaptureEvent, captureQueueLen),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),

		maxBytes: maxBytes,
	}
	go c.run()
	return c
}

// Plaintext says whether this capture records payloads and keys.
func (c *Capture) Plaintext() bool { return c.hdr.Plaintext }

// Dropped is the number of events lost so far.
func (c *Capture) Dropped() int64 { return c.dropped.Load() }

// Close writes the trailer, flushes and closes the file, and waits for the
// writer goroutine. Events offered after Close are dropped.
func (c *Capture) Close() error {
	if c.closed.Swap(true) {
		<-c.done
		return c.err
	}
	close(c.stop)
	<-c.done
	return c.err
}

func (c *Capture) run() {
	defer close(c.done)
	bw := bufio.NewWriterSize(c.w, 256<<10)
	write := func(b []byte) {
		if c.err == nil {
			_, c.err = bw.Write(b)
		}
	}
	write([]byte(c.hdr.String() + "\n# time session dir layer key=value... (usocks capture format 1; see README, Debugging: capture and replay)\n"))
	var written, size int64
	max := c.maxBytes
	if max <= 0 {
		max = DefaultCaptureMax
	}
	line := make([]byte, 0, 4096)
	emit := func(ev *CaptureEvent) {
		line = ev.AppendLine(line[:0])
		line = append(line, '\n')
		c.queued.Add(-int64(len(ev.Data)))
		if size+int64(len(line)) > max {
			c.dropped.Add(1) // the file is full: nothing more but the close line
			return
		}
		size += int64(len(line))
		write(line)
		written++
		if cap(line) > 1<<20 {
			line = make([]byte, 0, 4096)
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case ev := <-c.ch:
			emit(ev)
		case <-tick.C:
			if c.err == nil && bw.Buffered() > 0 {
				c.err = bw.Flush()
			}
		case <-c.stop:
		drain:
			for {
				select {
				case ev := <-c.ch:
					emit(ev)
				default:
					break drain
				}
			}
			tr := &CaptureEvent{T: time.Since(c.start), Layer: LayerClose, Events: written, Dropped: c.dropped.Load()}
			write(append(tr.AppendLine(nil), '\n'))
			if c.err == nil {
				c.err = bw.Flush()
			}
			if err := c.w.Close(); c.err == nil {
				c.err = err
			}
			if c.err != nil {
				c.err = fmt.Errorf("capture: %w", c.err)
			}
			return
		}
	}
}

// offer queues ev without blocking; false means it was dropped.
func (c *Capture) offer(ev *CaptureEvent) bool {
	if c.closed.Load() {
		return false
	}
	size := int64(len(ev.Data))
	if c.queued.Add(size) > captureQueueBytes {
		c.queued.Add(-size)
		return false
	}
	select {
	case c.ch <- ev:
		return true
	default:
		c.queued.Add(-size)
		return false
	}
}

// Session starts the capture of one backend connection. It is nil-safe: on
// a nil Capture it returns nil, and every method of a nil *SessionCapture
// does nothing.
func (c *Capture) Session(peer string) *SessionCapture {
	if c == nil {
		return nil
	}
	s := &SessionCapture{c: c, id: int(c.nextID.Add(1))}
	s.push(&CaptureEvent{Layer: LayerOpen, Peer: peer})
	return s
}

// SessionCapture taps one session into its Capture.
type SessionCapture struct {
	c       *Capture
	id      int
	dropped atomic.Int64 // lost since the last drop event
}

func (s *SessionCapture) push(ev *CaptureEvent) {
	c := s.c
	ev.Session = s.id
	ev.T = time.Since(c.start)
	if s.dropped.Load() > 0 {
		if n := s.dropped.Swap(0); n > 0 {
			if !c.offer(&CaptureEvent{T: ev.T, Session: s.id, Layer: LayerDrop, N: n}) {
				s.dropped.Add(n + 1)
				c.dropped.Add(1)
				return
			}
		}
	}
	if !c.offer(ev) {
		s.dropped.Add(1)
		c.dropped.Add(1)
	}
}

// bytesEvent records b (copied) at layer in direction d.
func (s *SessionCapture) bytesEvent(layer string, d Dir, b []byte) {
	if len(b) > maxEventBytes {
		// Never happens with the stages' buffer sizes; split to stay
		// within one line's limit.
		for len(b) > 0 {
			n := min(len(b), maxEventBytes)
			s.bytesEvent(layer, d, b[:n])
			b = b[n:]
		}
		return
	}
	s.push(&CaptureEvent{Dir: d, Layer: layer, N: int64(len(b)), Data: append([]byte(nil), b...)})
}

func (s *SessionCapture) frame(d Dir, f *wire.Frame, pad int) {
	ev := &CaptureEvent{Dir: d, Layer: LayerFrame,
		Frame: CaptureFrame{Type: f.Type, Flags: f.Flags, Stream: f.Stream, Len: len(f.Payload), Pad: pad}}
	if s.c.hdr.Plaintext {
		ev.Data = append([]byte{}, f.Payload...)
	}
	s.push(ev)
}

// The taps the stages call.
func (s *SessionCapture) backendIn(b []byte)             { s.bytesEvent(LayerBackend, DirIn, b) }
func (s *SessionCapture) backendOut(b []byte)            { s.bytesEvent(LayerBackend, DirOut, b) }
func (s *SessionCapture) frameIn(f *wire.Frame, pad int) { s.frame(DirIn, f, pad) }
func (s *SessionCapture) frameOut(f *wire.Frame)         { s.frame(DirOut, f, 0) }
func (s *SessionCapture) hsBytes(d Dir, b []byte)        { s.bytesEvent(LayerHandshake, d, b) }
func (s *SessionCapture) eof(d Dir, err error) {
	s.push(&CaptureEvent{Dir: d, Layer: LayerEOF, Err: errString(err)})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// tapEncrypt sets the v2 encrypt stage's tap, which also learns each
// frame's padding.
func (s *SessionCapture) tapEncrypt(e *stages.Encrypt) {
	e.Tap = func(f *wire.Frame, pad int) { s.frame(DirOut, f, pad) }
}

// tapBackend sets the backend taps and returns the reader's and writer's
// Run wrapped to record how each ended.
func (s *SessionCapture) tapBackend(rd *stages.BackendReader, wr *stages.BackendWriter) (read, write func(ctx context.Context) error) {
	rd.Tap, wr.Tap = s.backendIn, s.backendOut
	read = func(ctx context.Context) error {
		err := rd.Run(ctx)
		s.eof(DirIn, err)
		return err
	}
	write = func(ctx context.Context) error {
		err := wr.Run(ctx)
		s.eof(DirOut, err)
		return err
	}
	return read, write
}

// End records the end of the session (nil: clean).
func (s *SessionCapture) End(err error) {
	if s == nil {
		return
	}
	ev := &CaptureEvent{Layer: LayerEnd, Result: "clean"}
	if err != nil {
		ev.Result, ev.Err = "error", err.Error()
	}
	s.push(ev)
	if n := s.dropped.Swap(0); n > 0 {
		if !s.c.offer(&CaptureEvent{T: time.Since(s.c.start), Session: s.id, Layer: LayerDrop, N: n}) {
			s.c.dropped.Add(1)
		}
	}
}

// keyLog records the v2 data keys, in a plaintext capture only.
func (s *SessionCapture) keyLog(k *wire.SessionKeys, c wire.CipherID) {
	if s == nil || !s.c.hdr.Plaintext {
		return
	}
	s.push(&CaptureEvent{Layer: LayerKeys, Cipher: c.String(),
		C2S: append([]byte(nil), k.C2S[:]...), S2C: append([]byte(nil), k.S2C[:]...)})
}

// handshakeConn wraps conn so the handshake's reads and writes are
// recorded as hs events. On a nil SessionCapture it returns conn.
func (s *SessionCapture) handshakeConn(conn net.Conn) net.Conn {
	if s == nil {
		return conn
	}
	return &handshakeConn{Conn: conn, sess: s}
}

// handshakeConn is the conn the v2 handshake runs on while capturing.
type handshakeConn struct {
	net.Conn
	sess *SessionCapture
}

func (h *handshakeConn) Read(p []byte) (int, error) {
	n, err := h.Conn.Read(p)
	if n > 0 {
		h.sess.hsBytes(DirIn, p[:n])
	}
	return n, err
}

func (h *handshakeConn) Write(p []byte) (int, error) {
	n, err := h.Conn.Write(p)
	if n > 0 {
		h.sess.hsBytes(DirOut, p[:n])
	}
	return n, err
}

// CloseWrite half-closes the connection if it can (the server's reaction
// to invalid input uses it).
func (h *handshakeConn) CloseWrite() error {
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// captureKeyLog is the server handshake's KeyLog: it finds the session by
// the wrapped connection.
func captureKeyLog(c net.Conn, k *wire.SessionKeys, cipher wire.CipherID) {
	if h, ok := c.(*handshakeConn); ok {
		h.sess.keyLog(k, cipher)
	}
}
