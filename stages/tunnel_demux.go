package stages

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/wire"
	v1 "usocks/wire/v1"
)

// Demux is the decrypt → stream actors stage and the owner of the stream
// table. Only the demux goroutine reads or writes the table, so it needs
// no lock: new local connections (client), SYNs (server) and finished
// actors all reach it as channel messages.
//
// Demux never blocks on a stream: data goes into the stream's bounded
// receive buffer (flow control keeps it within streamWindow), and control
// replies go to the mux's control queue without waiting (dropped and
// counted if that queue is full). So one slow stream cannot stall others.
//
// When its input ends, Demux decides how the session ended: after a CLOSE
// frame it is a clean close (ErrPeerClosed), otherwise an insecure close
// (ErrInsecureClose), which may be truncation by an attacker.
//
// Streams at the session's end (SPEC-v2.md §7): on a clean end (our
// Closing, or the peer's CLOSE and then EOF) a stream whose receive side is
// complete — the peer's FIN has reached the demux, its data may still be on
// the way to the local socket — delivers what it holds and then ends
// (reset if its own side was still sending), for at most CloseGrace; every
// other stream is reset at once. After an insecure close, a RESET, an
// error or ctx every stream still open is reset. Either way Run returns
// only after every actor has finished.

// Session-ending errors reported by Demux.
var (
	ErrPeerClosed    = errors.New("peer closed the session")
	ErrInsecureClose = errors.New("backend ended without a CLOSE record (insecure close: possible truncation)")
	ErrPeerReset     = errors.New("peer reset the session")
	ErrProtocol      = wire.ErrProtocol // the same error as the record layer's
	ErrPeerDead      = errors.New("peer stopped answering (keepalive)")
)

// Role says which end of the tunnel a session is.
type Role int

// Roles.
const (
	Client Role = iota
	Server
)

func (r Role) String() string {
	if r == Client {
		return "client"
	}
	return "server"
}

// DefaultMaxStreams caps the streams of one tunnel.
const DefaultMaxStreams = 4096

// Demux is the tunnel-layer receive stage.
type Demux struct {
	Role Role
	In   <-chan Frame
	// Data and Control are the mux's inputs, handed to stream actors.
	Data    chan<- Frame
	Control chan<- Frame
	// Accept delivers the client's new local connections; nil on a server.
	Accept <-chan net.Conn
	// Frontend opens streams on a server.
	Frontend Frontend
	// MaxStreams caps open streams; 0 means DefaultMaxStreams.
	MaxStreams int
	// Drain, when closed, makes the demux take no new local connections
	// (backend rotation): the streams it has run to their end, and then it
	// calls Drained so the session closes cleanly.
	Drain   <-chan struct{}
	Drained func()
	// Closing, when closed, starts a graceful end: streams whose receive
	// side is complete finish delivering, the others are reset, no new ones
	// are opened, and demux keeps reading until the peer's EOF.
	Closing <-chan struct{}
	// CloseGrace bounds how long, once the end has started, a stream whose
	// receive side is complete may take to deliver it (0:
	// DefaultCloseGrace); it is then reset.
	CloseGrace time.Duration
	// PeerClosing is called once when the peer sends CLOSE, so the session
	// can answer with its own CLOSE and end cleanly.
	PeerClosing func()
	Log         *logrus.Entry
	// Stats, if set, is updated as streams open and close.
	Stats *Stats
	// Ended, if set, is called on the demux goroutine for every stream
	// that ends (an access log; per-user counts). It must not block.
	Ended func(StreamEnd)
	// LinkDead, if set, is called instead of ending the session when the
	// keepalive finds the peer silent (a resumable session cuts its
	// backend connection and resumes on a new one); the silence is then
	// counted afresh.
	LinkDead func(error)
	// KeepAlive, if set, sends a PING this often (v2) and ends the session
	// with ErrPeerDead when nothing has arrived for 2 intervals (a timer of
	// its own, not the ping tick), so a blackholed backend is noticed and
	// the client reconnects.
	KeepAlive time.Duration
	// IdleTimeout resets a stream with no data either way for this long
	// (0: never). HalfClosedTimeout does the same, sooner, for a stream
	// that one side has finished (0: never).
	IdleTimeout, HalfClosedTimeout time.Duration
	// Memory, if set, bounds what the streams' receive buffers keep
	// together (the session's budget, under its user's and the process's);
	// a stream that would pass it is reset.
	Memory *MemBudget
	// Relay is the client's end of datagram associations (nil: none).
	Relay DatagramRelay
	// Legacy selects protocol v1's tunnel rules (wire/v1, spec §4): no
	// windows, FIN/RST answered, unknown ids ignored, a duplicate SYN
	// replaces the old stream.
	Legacy bool

	v1ids     *v1.IDAllocator // legacy client: the original's id allocator
	streams   map[uint16]*stream
	done      chan *stream
	openers   *openers // the server's stream opens (tunnel_openers.go)
	nextID    uint16
	live      int
	closeSeen bool
	closed    bool
	draining  bool        // Drain was closed
	drained   bool        // Drained was called
	grace     *time.Timer // runs from the end's start to CloseGrace (nil before)
}

// deadAfter is how many keepalive intervals of silence end a session.
const deadAfter = 2

// Run demultiplexes until the input ends, ctx is done or a session error.
func (d *Demux) Run(ctx context.Context) (err error) {
	d.streams = make(map[uint16]*stream)
	d.done = make(chan *stream)
	d.openers = newOpeners()
	if d.MaxStreams <= 0 {
		d.MaxStreams = DefaultMaxStreams
	}
	if d.Stats == nil {
		d.Stats = new(Stats)
	}
	defer func() { d.shutdown(errors.Is(err, ErrPeerClosed)) }()
	accept := d.Accept
	closing := d.Closing
	drain := d.Drain
	var janitor, keepalive, dead, grace <-chan time.Time
	if d.IdleTimeout > 0 || d.HalfClosedTimeout > 0 {
		t := time.NewTicker(janitorPeriod(d.IdleTimeout, d.HalfClosedTimeout))
		defer t.Stop()
		janitor = t.C
	}
	lastRecv := time.Now()
	var deadTimer *time.Timer
	if d.KeepAlive > 0 && !d.Legacy {
		t := time.NewTicker(d.KeepAlive)
		defer t.Stop()
		keepalive = t.C
		// Re-armed only when it fires (not on every frame): it fires
		// at most deadAfter after the last frame, then either finds a
		// newer frame and waits for the rest, or declares the peer dead.
		deadTimer = time.NewTimer(deadAfter * d.KeepAlive)
		defer deadTimer.Stop()
		dead = deadTimer.C
	}
	for {
		select {
		case now := <-janitor:
			d.reapIdle(now)
		case <-keepalive:
			d.control(Frame{Frame: wire.Frame{Type: wire.FramePing}})
		case <-dead:
			// Anything from the peer proves it alive; silence for two
			// intervals (pings unanswered) declares the backend dead.
			silent := time.Since(lastRecv)
			if silent >= deadAfter*d.KeepAlive {
				err := fmt.Errorf("%w: nothing received for %v", ErrPeerDead, silent.Round(time.Millisecond))
				if d.LinkDead == nil {
					return err
				}
				// A resumable session loses the link, not the tunnel.
				d.LinkDead(err)
				lastRecv = time.Now()
				silent = 0
			}
			deadTimer.Reset(deadAfter*d.KeepAlive - silent)
		case <-closing:
			closing, accept = nil, nil
			grace = d.endStreams()
		case <-grace:
			grace = nil
			d.abortAll()
		case f, ok := <-d.In:
			if !ok {
				if d.closeSeen || d.Legacy {
					// The original v1 often ends with EOF and no close
					// record: for v1 that is the normal end.
					if !d.closeSeen && d.PeerClosing != nil {
						d.PeerClosing()
					}
					return ErrPeerClosed
				}
				return ErrInsecureClose
			}
			lastRecv = time.Now()
			if err := d.handle(ctx, f); err != nil {
				return err
			}
		case c := <-accept:
			d.openLocal(ctx, c)
		case <-drain:
			drain, accept = nil, nil
			d.draining = true
			d.checkDrained()
		case s := <-d.done:
			d.finish(s)
			d.checkDrained()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// checkDrained reports the end of a drain once the last stream is gone.
func (d *Demux) checkDrained() {
	if d.draining && !d.drained && d.live == 0 && d.Drained != nil {
		d.drained = true
		d.Drained()
	}
}

// finish forgets a stream whose actor ended; its id is free again (unless
// a new stream already took it, as a v1 peer may).
func (d *Demux) finish(s *stream) {
	s.recv.drain()
	if d.Ended != nil {
		d.Ended(s.end())
	}
	if d.streams[s.id] == s {
		delete(d.streams, s.id)
		if d.Relay != nil && d.Role == Client {
			d.Relay.Close(s.id)
		}
		if d.v1ids != nil {
			_ = d.v1ids.Recycle(s.id)
		}
	}
	d.live--
}

// spawn starts s's actor; it reports on d.done when finished.
func (d *Demux) spawn(ctx context.Context, s *stream, open func() (net.Conn, error)) {
	d.streams[s.id] = s
	d.live++
	d.Stats.StreamsOpened.Add(1)
	go func() {
		s.run(ctx, open)
		if s.currentState() == stateReset {
			d.Stats.StreamsReset.Add(1)
		}
		d.done <- s
	}()
}

// control queues f for the mux without blocking.
func (d *Demux) control(f Frame) {
	select {
	case d.Control <- f:
	default:
		d.Stats.ControlDropped.Add(1)
		d.Log.WithField("frame", f.Frame.String()).Warn("control queue full, reply dropped")
	}
}

func (d *Demux) rst(id uint16) {
	d.control(Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagRST, Stream: id}})
}

// newStream makes a stream whose receive buffer is charged to d.Memory.
func (d *Demux) newStream(id uint16, legacy bool) *stream {
	s := newStream(id, d.Data, d.Control, d.Log, legacy)
	s.recv.mem = d.Memory
	return s
}

// openLocal starts a stream for a new local connection (client).
func (d *Demux) openLocal(ctx context.Context, c net.Conn) {
	id, ok := d.allocID()
	if !ok {
		d.Log.WithField("limit", d.MaxStreams).Warn("stream limit reached, refusing local connection")
		resetConn(c)
		return
	}
	s := d.newStream(id, d.Legacy)
	if d.Relay != nil {
		s.sent = new(appPrefix)
	}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		s.appIP = ta.AddrPort().Addr().Unmap()
	}
	d.spawn(ctx, s, func() (net.Conn, error) {
		syn := Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagSYN, Stream: id}}
		if st, ok := c.(SynTarget); ok {
			syn.Payload = st.SynTarget() // §6e: the target rides in the SYN
		}
		if !s.sendData(ctx, syn) {
			_ = c.Close()
			return nil, net.ErrClosed
		}
		return c, nil
	})
}

// allocID picks the next free id after the last one used, so that an id
// is reused as late as possible (the peer has long forgotten it).
//
// A v1 client allocates as the original does (wire/v1 IDAllocator: freed
// ids first), since v1 peers expect ids to come back quickly.
func (d *Demux) allocID() (uint16, bool) {
	if len(d.streams) >= d.MaxStreams || len(d.streams) >= 65534 {
		return 0, false
	}
	if d.Legacy {
		if d.v1ids == nil {
			d.v1ids = new(v1.IDAllocator)
		}
		for i := 0; i < 65534; i++ {
			id, err := d.v1ids.Allocate()
			if err != nil {
				return 0, false
			}
			if _, used := d.streams[id]; !used {
				return id, true
			}
		}
		return 0, false
	}
	for {
		d.nextID++
		if d.nextID == 0 || d.nextID == 0xffff {
			d.nextID = 1
		}
		if _, used := d.streams[d.nextID]; !used {
			return d.nextID, true
		}
	}
}

// handle acts on one frame from the peer.
func (d *Demux) handle(ctx context.Context, f Frame) error {
	if d.closeSeen {
		// The peer said it sends nothing more: records after its CLOSE
		// are opened (a failure still ends the session) but no frame in
		// them is acted on (SPEC-v2.md §6d).
		f.Release()
		return nil
	}
	switch f.Type {
	case wire.FrameStream:
		d.handleStream(ctx, f)
	case wire.FrameWindow:
		if s, ok := d.streams[f.Stream]; ok {
			s.addCredit(wire.WindowCredit(&f.Frame))
		}
		f.Release()
	case wire.FramePing:
		pong := Frame{Frame: wire.Frame{Type: wire.FramePong, Payload: append([]byte(nil), f.Payload...)}}
		f.Release()
		d.control(pong)
	case wire.FrameDatagram:
		d.handleDatagram(f)
	case wire.FramePong, wire.FramePad:
		f.Release()
	case wire.FrameClose:
		f.Release()
		if !d.closeSeen {
			d.closeSeen = true
			if d.PeerClosing != nil {
				d.PeerClosing()
			}
		}
	case wire.FrameReset:
		f.Release()
		return ErrPeerReset
	default:
		t := f.Type
		f.Release()
		return fmt.Errorf("%w: unsupported frame %s", ErrProtocol, t)
	}
	return nil
}

func (d *Demux) handleStream(ctx context.Context, f Frame) {
	if d.Legacy {
		d.handleLegacy(ctx, f)
		return
	}
	id := f.Stream
	s, known := d.streams[id]
	if f.Flags.Has(wire.FlagRST) {
		f.Release()
		if known {
			s.abort(false)
		}
		return
	}
	if d.closed {
		f.Release()
		return
	}
	if f.Flags.Has(wire.FlagSYN) {
		switch {
		case d.Role != Server:
			d.Log.WithField("stream", id).Warn("SYN from server, resetting stream")
			if known {
				s.abort(true)
			} else {
				d.rst(id)
			}
			f.Release()
			return
		case known:
			d.Log.WithField("stream", id).Warn("duplicate SYN, resetting stream")
			s.abort(true)
			f.Release()
			return
		case len(d.streams) >= d.MaxStreams:
			d.Log.WithField("limit", d.MaxStreams).Warn("stream limit reached, refusing SYN")
			d.rst(id)
			f.Release()
			return
		}
		fe := d.Frontend
		if src, ok := fe.(FrontendSource); ok {
			fe = src.Current() // a reload may have replaced it
		}
		open := func(s *stream) func() (net.Conn, error) {
			return func() (net.Conn, error) { return fe.Open(ctx, s) }
		}
		if !f.Flags.Has(wire.FlagDAT) && len(f.Payload) > 0 {
			// The SYN names its target (§6e).
			tg, err := wire.ParseTarget(f.Payload)
			tg.Addr = bytes.Clone(tg.Addr) // before the payload's buffer goes back to the pool
			tf, ok := fe.(TargetFrontend)
			f.Release() // the payload was the target, not data; the flags stay
			if err != nil || !ok {
				d.Log.WithField("stream", id).WithError(err).Info("SYN target refused (malformed, or the frontend takes no client-chosen targets)")
				d.rst(id)
				return
			}
			open = func(s *stream) func() (net.Conn, error) {
				return func() (net.Conn, error) { return tf.OpenTarget(ctx, s, tg) }
			}
		}
		s = d.newStream(id, d.Legacy)
		known = true
		d.spawn(ctx, s, d.openers.wrap(open(s)))
	}
	if !known {
		// Data for a stream we do not have (it was reset, or never was).
		f.Release()
		d.rst(id)
		return
	}
	fin := f.Flags.Has(wire.FlagFIN)
	if len(f.Payload) > 0 {
		if err := s.recv.push(f); err != nil {
			d.Log.WithField("stream", id).WithError(err).Warn("resetting stream")
			s.abort(true)
			return
		}
	} else {
		f.Release()
	}
	if fin {
		s.recv.finish()
	}
}
