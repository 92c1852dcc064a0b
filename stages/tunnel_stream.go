package stages

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

// Stream actors: one per tunnel stream, on both sides.
//
// A stream has a local socket (the app's connection on the client, the
// target on the server) and two pumps:
//
//	up:   local socket → DAT frames → mux (Data queue), then FIN at EOF
//	down: receive buffer (filled by demux) → local socket, then
//	      CloseWrite at the peer's FIN; it returns credit with WINDOW frames
//
// The actor goroutine runs down; it starts one goroutine for up. Demux is
// the only goroutine that pushes into the receive buffer and calls
// addCredit/abort; the pumps are the only ones that touch the socket. The
// stream is finished when both pumps are done; the actor then reports its
// id on Demux's done channel, and only then is the id free again.
//
// Flow control: each side may have at most streamWindow bytes of a stream
// in flight or buffered at the receiver. The sender spends credit before it
// reads from its socket; the receiver returns credit after writing to its
// socket. A peer that sends beyond its credit gets the stream reset, so a
// stream whose reader never reads holds at most streamWindow bytes and
// never stalls the demux or other streams.

// smallReadSize is the per-stream buffer a quiet stream reads into (the
// small pool class).
const smallReadSize = smallBufSize

// legacyFINLinger bounds how long a v1 stream keeps reading its local side
// after the peer's FIN before it answers with its own: how long the local
// side may stay silent, counted afresh at each read. (A bound on the whole
// answer cut off a local side still sending behind a loaded tunnel, and
// the FIN that followed made the cut look like a clean end.)
const legacyFINLinger = 10 * time.Second

// errFlowControl is a peer sending beyond the credit it was given.
var errFlowControl = errors.New("stream flow-control window exceeded")

// errMemory is a stream whose buffered data would take the session, its
// user or the process past a receive-memory budget (MemBudget).
var errMemory = errors.New("receive memory budget exceeded")

type stream struct {
	id uint16

	// mu guards the stream's state and what a transition acts on.
	mu    sync.Mutex
	state streamState
	// conn is set before the pumps start; the transition to reset resets
	// it so a pump blocked in Read or Write wakes up.
	conn     net.Conn
	raw      *rawSock // conn's raw reads and writes, if it is a TCP socket (set with conn)
	connDone bool     // the actor closed conn itself
	// replyRST (legacy) is an RST to send when the actor ends.
	replyRST bool
	data     chan<- Frame
	control  chan<- Frame
	base     *logrus.Entry // the session's logger; logger() adds the stream

	recv recvBuf

	credit   atomic.Int64
	creditCh chan struct{} // cap 1: "credit was added"

	aborted chan struct{} // closed by the transition to reset

	// legacy is v1 mode: no credit, no WINDOW frames, no half-close, and
	// FIN and RST are answered (by the actor, on the data queue, so the
	// answer never overtakes data the peer still expects).
	legacy bool
	// ending is set by the demux when the session's end starts
	// (endWithSession): down ends the stream once it has delivered the
	// peer's FIN, and returns no more credit.
	ending atomic.Bool
	// lingering (legacy) is set by down at the peer's FIN: from then on
	// each read of the local side moves its read deadline legacyFINLinger on.
	lingering atomic.Bool

	// dgrams, once set by OpenAssociation (server), receives the app's
	// datagrams; appIP is where a client stream's app connected from;
	// relayOpen (client, demux goroutine only) says the association is open.
	dgrams    atomic.Pointer[chan []byte]
	appIP     netip.Addr
	relayOpen bool
	// sent keeps the first bytes a client stream's app sent (when the
	// client has a relay): the relay opens an association only for a
	// stream whose app asked for one (a SOCKS5 UDP ASSOCIATE).
	sent *appPrefix

	// active is the unix-nano time of the last data in either direction;
	// the demux's janitor resets streams idle for too long.
	active atomic.Int64

	// For the end-of-stream report (StreamEnd): when the actor started,
	// bytes read from the local side (up) and written to it (down), the
	// local side's address, and why it could not be opened. peer and
	// openErr are written by the actor before it reports its end.
	started    time.Time
	upN, downN atomic.Int64
	peer       string
	openErr    error
}

func (s *stream) touch() { s.active.Store(time.Now().UnixNano()) }

// logger is the stream's logger, made when something is logged (an entry
// with its field map per stream would cost every idle stream memory).
func (s *stream) logger() *logrus.Entry { return s.base.WithField("stream", s.id) }

func newStream(id uint16, data, control chan<- Frame, log *logrus.Entry, legacy bool) *stream {
	s := &stream{
		id:       id,
		data:     data,
		control:  control,
		base:     log,
		creditCh: make(chan struct{}, 1),
		aborted:  make(chan struct{}),
		legacy:   legacy,
	}
	s.recv.notify = make(chan struct{}, 1)
	s.recv.space = make(chan struct{}, 1)
	s.recv.window.Store(streamWindow)
	s.recv.granted.Store(streamWindow)
	s.credit.Store(streamWindow)
	s.touch()
	if legacy {
		// v1 has no flow control: the peer's only brake is the backend.
		s.credit.Store(1 << 62)
	}
	return s
}

// addCredit is called by demux for a WINDOW frame.
func (s *stream) addCredit(n uint32) {
	if s.credit.Add(int64(n)) > 1<<30 {
		s.credit.Store(1 << 30)
	}
	select {
	case s.creditCh <- struct{}{}:
	default:
	}
}

// sendData queues f on the data queue, giving up if the stream is aborted.
func (s *stream) sendData(ctx context.Context, f Frame) bool {
	select {
	case s.data <- f:
		return true
	case <-s.aborted:
	case <-ctx.Done():
	}
	f.Release()
	return false
}

// takeCredit waits until some credit is available and takes up to max.
func (s *stream) takeCredit(ctx context.Context, max int) (int, bool) {
	for {
		c := s.credit.Load()
		if c > 0 {
			n := min(int64(max), c)
			if s.credit.CompareAndSwap(c, c-n) {
				return int(n), true
			}
			continue
		}
		select {
		case <-s.creditCh:
		case <-s.aborted:
			return 0, false
		case <-ctx.Done():
			return 0, false
		}
	}
}

// run is the actor: it opens the stream, runs the pumps and returns when
// both are done. open is called first (client: send SYN; server: dial the
// frontend) and returns the local socket or an error (then RST).
func (s *stream) run(ctx context.Context, open func() (net.Conn, error)) {
	s.started = time.Now()
	c, err := guardOpen(open)
	if err != nil {
		s.openErr = err
		if p, ok := asPanic(err); ok {
			s.panicked("open", p)
		} else {
			s.logger().WithError(err).Debug("stream open failed")
		}
		// No RST when the session is ending: its streams are reset
		// without them (SPEC-v2.md §6d).
		s.abort(ctx.Err() == nil)
		if s.legacy {
			s.legacyReply(ctx)
		}
		return
	}
	s.peer = c.RemoteAddr().String()
	s.mu.Lock()
	s.conn = c
	s.raw = newRawSock(c)
	s.mu.Unlock()
	if s.transition(evOpened, false) {
		stop := context.AfterFunc(ctx, func() { s.abort(false) })
		upDone := make(chan struct{})
		go func() {
			defer close(upDone)
			s.guard("up", func() { s.up(ctx) })
		}()
		s.guard("down", func() { s.down(ctx) })
		<-upDone
		stop()
	}
	// Reset while opening (the pumps never ran) or before the pumps'
	// end: the app or target must see a reset, never a clean end.
	s.mu.Lock()
	s.connDone = true
	reset := s.state == stateReset
	s.mu.Unlock()
	if reset {
		resetConn(c)
	} else {
		_ = c.Close()
	}
	if s.legacy {
		s.legacyReply(ctx)
	}
}

// legacyReply sends v1's RST answer when the stream ends, after any data
// this stream queued (a v1 peer that frees the id on RST would choke on
// data arriving after it). FIN needs no special answer: our FIN goes out
// when the local side ends, which is the answer.
func (s *stream) legacyReply(ctx context.Context) {
	s.mu.Lock()
	reply := s.replyRST
	s.mu.Unlock()
	if !reply {
		return
	}
	f := Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagRST, Stream: s.id}}
	select {
	case s.data <- f:
	case <-ctx.Done():
	}
}

// up pumps the local socket into DAT frames until EOF (then FIN).
//
// While a stream is quiet it waits in Read with a small buffer of its own,
// so idle streams hold no pooled payload buffer; once a read fills it, the
// stream is busy and reads straight into pooled buffers of a whole frame.
func (s *stream) up(ctx context.Context) {
	var small *payloadBuf // the quiet-stream read buffer, from the small class
	defer func() { putBuf(small) }()
	bulk := false
	for {
		want := smallReadSize
		if bulk {
			want = wire.MaxPayloadLen
		}
		n, ok := s.takeCredit(ctx, want)
		if !ok {
			return
		}
		var buf *payloadBuf
		var m int
		var err error
		switch {
		case s.raw != nil:
			// A buffer only once data is there: a waiting stream holds
			// none, quiet or busy.
			buf, m, err = s.raw.readBuf(n)
		case bulk:
			buf = getBuf(n)
			m, err = s.conn.Read(buf.B[:n])
		default:
			if small == nil {
				small = getBuf(smallReadSize)
			}
			m, err = s.conn.Read(small.B[:n])
			if m > 0 {
				// The read buffer itself becomes the frame's payload; the
				// next read takes a fresh one from the pool.
				buf, small = small, nil
			}
		}
		bulk = m == n && n > 0
		s.touch()
		if m > 0 && s.lingering.Load() {
			_ = s.conn.SetReadDeadline(time.Now().Add(legacyFINLinger))
		}
		if m < n {
			s.addCredit(uint32(n - m))
		}
		if m > 0 {
			s.upN.Add(int64(m))
			s.sent.record(buf.B[:m])
			f := Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: s.id, Payload: buf.B[:m]}, buf: buf}
			if !s.sendData(ctx, f) {
				return
			}
		} else {
			putBuf(buf)
		}
		if err != nil {
			select {
			case <-s.aborted:
				return
			default:
			}
			if errors.Is(err, io.EOF) || (s.legacy && s.currentState() == stateRemoteFIN && errors.Is(err, os.ErrDeadlineExceeded)) {
				f := Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagFIN, Stream: s.id}}
				if s.sendData(ctx, f) {
					s.transition(evFINSent, false)
				}
				return
			}
			s.logger().WithError(err).Debug("local read failed, resetting stream")
			s.abort(true)
			return
		}
	}
}

// writev writes bufs to the local socket, consuming it.
func (s *stream) writev(bufs *net.Buffers) (int64, error) {
	if s.raw != nil {
		return s.raw.writev(bufs)
	}
	return bufs.WriteTo(s.conn)
}

// down writes received data to the local socket and returns credit.
func (s *stream) down(ctx context.Context) {
	consumed := 0
	batch := make([]Frame, 0, downBatch)
	var bufs net.Buffers
	var wb net.Buffers // WriteTo consumes its receiver: a copy of bufs, hoisted so it is allocated once
	for {
		var eof, ok bool
		batch, eof, ok = s.recv.popBatch(s.aborted, batch[:0])
		if !ok {
			return
		}
		if len(batch) == 0 && eof {
			s.transition(evFINRecv, false)
			if s.raw != nil {
				_ = s.raw.closeWrite()
			} else {
				_ = CloseWrite(s.conn)
			}
			if s.legacy {
				// v1 has no half-close, and a v1 peer holds the id until
				// our FIN answers its FIN. We still let the local side
				// finish (our own v1 peer delivers the data; an original
				// one drops it), until it has been silent for
				// legacyFINLinger (up moves the deadline on as it reads).
				s.lingering.Store(true)
				_ = s.conn.SetReadDeadline(time.Now().Add(legacyFINLinger))
			}
			if s.ending.Load() && s.currentState() != stateClosed {
				// The session is ending: what the peer sent is delivered,
				// what the local side still sends has nowhere to go.
				s.abort(false)
			}
			return
		}
		// Everything buffered goes out in one vectored write.
		n := 0
		bufs = bufs[:0]
		for i := range batch {
			bufs = append(bufs, batch[i].Payload)
			n += len(batch[i].Payload)
		}
		wb = bufs
		_, err := s.writev(&wb)
		for i := range batch {
			batch[i].Release()
		}
		s.touch()
		if err != nil {
			select {
			case <-s.aborted:
			default:
				s.logger().WithError(err).Debug("local write failed, resetting stream")
				s.abort(true)
			}
			return
		}
		consumed += n
		s.downN.Add(int64(n))
		if !s.legacy && consumed >= windowUpdateThreshold && !s.ending.Load() {
			// Auto-tuning: if the app has already taken everything, the
			// window, not the app, limits this stream: double it (up to
			// maxStreamWindow). A slow reader never grows its window.
			grant := consumed
			if win := s.recv.window.Load(); win < maxStreamWindow && s.recv.buffered() == 0 {
				s.recv.window.Store(win * 2)
				grant += int(win)
			}
			s.recv.grant(grant)
			w := Frame{Frame: wire.Frame{Type: wire.FrameWindow, Stream: s.id, Payload: wire.WindowPayload(nil, uint32(grant))}}
			select {
			case s.control <- w:
				consumed = 0
			case <-s.aborted:
				return
			case <-ctx.Done():
				return
			}
		}
	}
}

// StreamEnd reports a finished stream (Demux.Ended): for an access log
// and per-user byte counts.
type StreamEnd struct {
	ID uint16
	// Peer is the local side: on a client the app's address, on a server
	// the target's ("" if it could not be opened).
	Peer string
	// Up is bytes read from the local side and sent into the tunnel; Down
	// bytes received from the tunnel and written to the local side.
	Up, Down int64
	Duration time.Duration
	// How is "closed" (both sides finished), "reset", or "open failed".
	How string
	// Err is why the stream could not be opened (How "open failed").
	Err error
}

// end describes the finished stream (called by the demux after the actor
// reported its end, so reading the actor's fields is ordered after them).
func (s *stream) end() StreamEnd {
	e := StreamEnd{ID: s.id, Peer: s.peer, Up: s.upN.Load(), Down: s.downN.Load(), Duration: time.Since(s.started), How: "closed", Err: s.openErr}
	switch {
	case s.openErr != nil:
		e.How = "open failed"
	case s.currentState() == stateReset:
		e.How = "reset"
	}
	return e
}
