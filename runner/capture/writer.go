package capture

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
// session sets on its stages. The file format is in format.go, reading it in parse.go and reader.go.

// Writer is one capture file being written: a bounded queue and the
// goroutine that drains it. It is safe for concurrent use.
type Writer struct {
	hdr   Header
	start time.Time
	w     io.WriteCloser

	ch      chan *Event
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

// DefaultMax is the default size cap of a capture file.
const DefaultMax = 1 << 30

// Open creates (or truncates) the file at path, readable by its
// owner only, and starts its writer.
func Open(path string, protocol, role string, plaintext bool, maxBytes int64) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	return NewWriter(f, protocol, role, plaintext, maxBytes), nil
}

// NewWriter starts a capture writing to w, at most maxBytes of it
// (≤ 0: DefaultMax); Close closes w.
func NewWriter(w io.WriteCloser, protocol, role string, plaintext bool, maxBytes int64) *Writer {
	now := time.Now()
	c := &Writer{
		hdr:   Header{Version: Version, Protocol: protocol, Role: role, Plaintext: plaintext, Start: now},
		start: now,
		w:     w,
		ch:    make(chan *Event, queueLen),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),

		maxBytes: maxBytes,
	}
	go c.run()
	return c
}

// Plaintext says whether this capture records payloads and keys.
func (c *Writer) Plaintext() bool { return c.hdr.Plaintext }

// Dropped is the number of events lost so far.
func (c *Writer) Dropped() int64 { return c.dropped.Load() }

// Close writes the trailer, flushes and closes the file, and waits for the
// writer goroutine. Events offered after Close are dropped.
func (c *Writer) Close() error {
	if c.closed.Swap(true) {
		<-c.done
		return c.err
	}
	close(c.stop)
	<-c.done
	return c.err
}

func (c *Writer) run() {
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
		max = DefaultMax
	}
	line := make([]byte, 0, 4096)
	emit := func(ev *Event) {
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
			tr := &Event{T: time.Since(c.start), Layer: LayerClose, Events: written, Dropped: c.dropped.Load()}
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
func (c *Writer) offer(ev *Event) bool {
	if c.closed.Load() {
		return false
	}
	size := int64(len(ev.Data))
	if c.queued.Add(size) > queueBytes {
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
// a nil Writer it returns nil, and every method of a nil *Session
// does nothing.
func (c *Writer) Session(peer string) *Session {
	if c == nil {
		return nil
	}
	s := &Session{c: c, id: int(c.nextID.Add(1))}
	s.push(&Event{Layer: LayerOpen, Peer: peer})
	return s
}

// Session taps one session into its Writer.
type Session struct {
	c       *Writer
	id      int
	dropped atomic.Int64 // lost since the last drop event
}

func (s *Session) push(ev *Event) {
	c := s.c
	ev.Session = s.id
	ev.T = time.Since(c.start)
	if s.dropped.Load() > 0 {
		if n := s.dropped.Swap(0); n > 0 {
			if !c.offer(&Event{T: ev.T, Session: s.id, Layer: LayerDrop, N: n}) {
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
func (s *Session) bytesEvent(layer string, d Dir, b []byte) {
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
	s.push(&Event{Dir: d, Layer: layer, N: int64(len(b)), Data: append([]byte(nil), b...)})
}

func (s *Session) frame(d Dir, f *wire.Frame, pad int) {
	ev := &Event{Dir: d, Layer: LayerFrame,
		Frame: Frame{Type: f.Type, Flags: f.Flags, Stream: f.Stream, Len: len(f.Payload), Pad: pad}}
	if s.c.hdr.Plaintext {
		ev.Data = append([]byte{}, f.Payload...)
	}
	s.push(ev)
}

// The taps the stages call. FrameIn and FrameOut fit the decrypt and
// encrypt stages' Tap fields (v1's encrypt: FrameOut; v2's: TapEncrypt).
func (s *Session) backendIn(b []byte)             { s.bytesEvent(LayerBackend, DirIn, b) }
func (s *Session) backendOut(b []byte)            { s.bytesEvent(LayerBackend, DirOut, b) }
func (s *Session) FrameIn(f *wire.Frame, pad int) { s.frame(DirIn, f, pad) }
func (s *Session) FrameOut(f *wire.Frame)         { s.frame(DirOut, f, 0) }
func (s *Session) hsBytes(d Dir, b []byte)        { s.bytesEvent(LayerHandshake, d, b) }
func (s *Session) eof(d Dir, err error) {
	s.push(&Event{Dir: d, Layer: LayerEOF, Err: errString(err)})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TapEncrypt sets the v2 encrypt stage's tap, which also learns each
// frame's padding.
func (s *Session) TapEncrypt(e *stages.Encrypt) {
	e.Tap = func(f *wire.Frame, pad int) { s.frame(DirOut, f, pad) }
}

// TapBackend sets the backend taps and returns the reader's and writer's
// Run wrapped to record how each ended.
func (s *Session) TapBackend(rd *stages.BackendReader, wr *stages.BackendWriter) (read, write func(ctx context.Context) error) {
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
func (s *Session) End(err error) {
	if s == nil {
		return
	}
	ev := &Event{Layer: LayerEnd, Result: "clean"}
	if err != nil {
		ev.Result, ev.Err = "error", err.Error()
	}
	s.push(ev)
	if n := s.dropped.Swap(0); n > 0 {
		if !s.c.offer(&Event{T: time.Since(s.c.start), Session: s.id, Layer: LayerDrop, N: n}) {
			s.c.dropped.Add(1)
		}
	}
}

// Link records that this connection carries link n (n ≥ 2) of the
// resumable session whose first connection's capture is first (nil: not
// captured, of=0).
func (s *Session) Link(first *Session, n int) {
	if s == nil {
		return
	}
	of := 0
	if first != nil {
		of = first.id
	}
	s.push(&Event{Layer: LayerLink, Of: of, N: int64(n)})
}

// KeyLog records the v2 data keys, in a plaintext capture only.
func (s *Session) KeyLog(k *wire.SessionKeys, c wire.CipherID) {
	if s == nil || !s.c.hdr.Plaintext {
		return
	}
	s.push(&Event{Layer: LayerKeys, Cipher: c.String(),
		C2S: append([]byte(nil), k.C2S[:]...), S2C: append([]byte(nil), k.S2C[:]...)})
}

// HandshakeConn wraps conn so the handshake's reads and writes are
// recorded as hs events. On a nil Session it returns conn.
func (s *Session) HandshakeConn(conn net.Conn) net.Conn {
	if s == nil {
		return conn
	}
	return &handshakeConn{Conn: conn, sess: s}
}

// handshakeConn is the conn the v2 handshake runs on while capturing.
type handshakeConn struct {
	net.Conn
	sess *Session
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
	return stages.CloseWrite(h.Conn)
}

// ServerKeyLog is the server handshake's KeyLog: it finds the session by
// the wrapped connection.
func ServerKeyLog(c net.Conn, k *wire.SessionKeys, cipher wire.CipherID) {
	if h, ok := c.(*handshakeConn); ok {
		h.sess.KeyLog(k, cipher)
	}
}
