package runner

import (
	"context"
	"crypto/rand"
	"errors"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"usocks/runner/capture"
	"usocks/stages"
	"usocks/wire"
)

// A link is one backend connection of a session and the stages bound to
// it: backend reader and writer, decrypt and encrypt (its keys), and the
// defence stage (its agreed policy). The session runs one link at a time
// (runLink); a resumable session starts the next on a new connection
// while its tunnel keeps running.
//
// Ordering between links: runLink returns only after every stage of the
// link has stopped, so the old decrypt has handed its last frame to the
// session's frames channel (the count it reported is final) before the
// next link's handshake reports it, and the old encrypt's input channel —
// its own, closed by the resend stage on Detach — is never read again:
// what was queued there is resent from the resend buffer.

// link is one backend connection.
type link struct {
	conn net.Conn
	keys *stages.Keys // v2; the session's v1 keys otherwise
	// capture records this link (nil: off).
	capture *capture.Session
	// peerRecv is the count of numbered frames the peer said it has
	// received (resumable sessions: where to resend from).
	peerRecv uint64
	// lane is the link's id in a session that runs over lanes, index
	// the lane's place in the client's set (LANES, session_lanes.go).
	lane  int
	index uint8
	// rotated, if set, is closed when rotation retires the lane (its
	// replacement is dialled at once).
	rotated   chan struct{}
	rotatedMu sync.Once
}

// retire tells the lane's slot that rotation retires it.
func (lk *link) retire() {
	if lk.rotated != nil {
		lk.rotatedMu.Do(func() { close(lk.rotated) })
	}
}

// errTakenOver ends a link when a resuming connection claims its session
// (the client saw the old connection die before the server did).
var errTakenOver = errors.New("a new connection resumed the session")

// runLink runs the link's stages until they have all stopped and returns
// the error the link's group ended with (nil: the session's clean end).
// Errors that are fatal to the session go to fail at once, so that the
// writer can still send RESET; only a lost link ends the group.
func (s *session) runLink(lk *link) error {
	lctx, cut := context.WithCancelCause(s.hard)
	defer cut(nil)
	if s.ls != nil {
		s.ls.start(lk, cut)
		defer s.ls.stop(lk)
	} else {
		s.mu.Lock()
		s.cutLink = cut
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.cutLink = nil
			s.mu.Unlock()
		}()
	}
	p := s.p
	in := (<-chan stages.Batch)(s.batches)
	if s.ls != nil {
		ch := make(chan stages.Batch, stages.BatchQueueLen)
		if err := s.ls.stage.Add(s.hard, lk.lane, ch, lk.peerRecv, s.laneHello(lk)...); err != nil {
			_ = lk.conn.Close()
			s.fail(err)
			return err
		}
		// After the stages have stopped: what the lane was given and
		// the peer has not acknowledged goes on the other lanes.
		defer s.ls.stage.Remove(s.hard, lk.lane)
		in = ch
	} else if s.resend != nil {
		ch := make(chan stages.Batch, stages.BatchQueueLen)
		if err := s.resend.Attach(s.hard, ch, lk.peerRecv); err != nil {
			_ = lk.conn.Close()
			s.fail(err)
			return err
		}
		defer s.resend.Detach(s.hard)
		in = ch
	}
	g, gctx := errgroup.WithContext(lctx)
	// A deadline (or, for a dead backend, closing the socket) is what
	// unblocks the reader and writer at the end. Closing with unread input
	// would make the kernel send RST and destroy a last record in flight.
	stopConn := context.AfterFunc(gctx, func() {
		if s.linger(context.Cause(gctx)) {
			_ = lk.conn.SetDeadline(time.Now().Add(stages.LingerTimeout))
		} else {
			_ = lk.conn.Close()
		}
	})
	defer stopConn()

	chunks := make(chan stages.Chunk, stages.ChunkQueueLen)
	sealed := make(chan stages.Sealed, stages.BatchQueueLen)
	var enc, dec, defence func(context.Context) error
	var recycle func(stages.Sealed)
	// v1's decrypt stage, which reads the backend itself.
	var fusedV1 *stages.DecryptV1
	if s.legacy {
		e := &stages.EncryptV1{Sealer: p.v1.seal, Rand: rand.Reader, In: in, Out: sealed, Log: s.stage("encrypt")}
		d := &stages.DecryptV1{Opener: p.v1.open, In: chunks, Out: s.frames, Log: s.stage("decrypt"), Failed: s.fail}
		if lk.capture != nil {
			e.Tap, d.Tap = lk.capture.FrameOut, lk.capture.FrameIn
		}
		enc, dec = e.Run, d.Run
		fusedV1 = d
	} else {
		keys := lk.keys
		p.stats.DefencePolicy.Store(int32(keys.Defence))
		var decEvents *stages.DefenceEvents
		cell := 0
		shaped := in
		if params := p.tuning.apply(keys.Defence, p.role); params != nil {
			out := make(chan stages.Batch, stages.BatchQueueLen)
			var seed [32]byte
			_, _ = rand.Read(seed[:])
			decEvents = stages.NewDefenceEvents()
			def := &stages.Defence{Params: params, In: in, Out: out, Events: decEvents, MarkPieces: s.rs != nil, Carry: s.defCarry,
				Rand: mrand.New(mrand.NewChaCha8(seed)), Stats: p.stats, Log: s.stage("defence")}
			defence, cell, shaped = def.Run, params.Cell, out
		}
		// The keys stay inside the Sealer and Opener (package wire), which
		// rekey themselves; the stages own those.
		e := &stages.Encrypt{Sealer: keys.Seal, Cell: cell, In: shaped, Out: sealed, Log: s.stage("encrypt"), Resume: s.rs,
			Rekey: &stages.Rekeyer{After: p.rekeyAfter, Rand: rand.Reader, Counter: &p.stats.Rekeys}}
		laneIn := s.laneIn(lk)
		d := &stages.Decrypt{Opener: keys.Open, In: chunks, Out: s.frames, Log: s.stage("decrypt"),
			Chaff: func() { p.stats.ChaffReceived.Add(1) }, Events: decEvents, Resume: s.rs, Lane: laneIn, Failed: s.fail}
		defer s.watchLane(gctx, lk, laneIn, cut)()
		if lk.capture != nil {
			lk.capture.TapEncrypt(e)
			d.Tap = lk.capture.FrameIn
		}
		enc, dec, recycle = e.Run, d.Run, e.Recycle
	}
	rd := &stages.BackendReader{Conn: lk.conn, Out: chunks, Log: s.stage("backend-reader")}
	wr := &stages.BackendWriter{Conn: lk.conn, In: sealed, Log: s.stage("backend-writer"), Release: recycle}
	readRun, writeRun := rd.Run, wr.Run
	if lk.capture != nil {
		readRun, writeRun = lk.capture.TapBackend(rd, wr)
	}
	readRun, writeRun = s.endWithoutHalfClose(gctx, lk.conn, readRun, writeRun)
	rot := s.armRotation(lk, rd, wr, cut)
	defer rot.stop()
	run := func(name string, f func(context.Context) error, io bool) {
		g.Go(func() error {
			err := s.linkErr(s.runStage(gctx, name, f), gctx)
			if io && s.isFailed() {
				// Nothing more can usefully cross the backend.
				s.cancelHard()
			}
			return err
		})
	}
	if defence != nil {
		run("defence", defence, false)
	}
	if fusedV1 != nil && lk.capture == nil && stages.CanCloseWrite(lk.conn) {
		// v1: one goroutine for the link's input, decrypt reading the
		// socket itself (stages.DecryptV1.From), so that a reset after
		// the original's close record comes after that record. Not with
		// a capture (which wraps the reader's run) nor on a backend
		// without half-close (whose reader's end endWithoutHalfClose
		// interprets). v2 keeps a reader of its own: reading on while
		// decrypt waits for the demux kept 10-15 % more throughput.
		fusedV1.From = rd
		rd.Log.Debug("stage started: read by the decrypt stage's goroutine")
		defer rd.Log.Debug("stage stopped")
		run("decrypt", s.readOnAfterFailure(rd, dec), false)
	} else {
		run("backend-reader", readRun, true)
		run("decrypt", dec, false)
	}
	run("encrypt", enc, false)
	run("backend-writer", writeRun, true)
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		// Cut from outside: the cause says why (keepalive, takeover), or
		// the session's hard end (nil then).
		err = nil
		if c := context.Cause(lctx); c != nil && !errors.Is(c, context.Canceled) {
			err = c
		}
	}
	if rot.retired() && err != nil && linkLost(err) {
		err = errRotated
	}
	if s.linger(err) {
		stages.LingerClose(lk.conn, stages.LingerTimeout)
	} else {
		_ = lk.conn.Close()
	}
	return err
}

// readOnAfterFailure runs a decrypt stage that reads the backend itself
// (stages.DecryptV1.From) so that the link ends as with a backend reader of
// its own. After a failure of the session that is not the backend's (a
// record that fails authentication, a protocol error) the socket is read
// on, and what arrives dropped, while the writer sends RESET: the writer's
// end then cuts the session (run's io), not the peer's EOF, which may come
// first. A read error (here or in decrypt) ends the session at once:
// nothing more can cross the backend.
func (s *session) readOnAfterFailure(rd *stages.BackendReader, dec func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		err := dec(ctx)
		readErr := err
		var be *stages.BackendError
		if err != nil && !errors.As(err, &be) && ctx.Err() == nil && s.isFailed() {
			for {
				c, ok, rerr := rd.ReadChunk(ctx)
				if !ok {
					readErr = rerr
					break
				}
				c.Release()
			}
		}
		if errors.As(readErr, &be) && s.isFailed() {
			s.cancelHard()
		}
		return err
	}
}

// linkErr classifies a link stage's error: what the group returns. A lost
// backend in a resumable session ends the link (the group's error); any
// other error is the session's (fail, which lets the writer still send
// RESET) and the stage returns nil.
func (s *session) linkErr(err error, gctx context.Context) error {
	switch {
	case err == nil || errors.Is(err, stages.ErrPeerClosed):
		return nil
	case gctx.Err() != nil:
		return err // the cut after the group's first error
	case s.legacy && ourSideGone(err) && s.peerHasClosed():
		// The original v1 closes its socket right after its close
		// record: our CLOSE and FIN may meet a reset socket.
		return nil
	case s.ls != nil && linkLost(err) && s.ending():
		// A session over lanes that is ending: its CLOSE came on one
		// lane; the others simply end.
		return err
	case s.rs != nil && linkLost(err) && !s.ending():
		if errors.Is(err, wire.ErrAuth) {
			s.p.log.WithError(err).Warn("record failed authentication: backend dropped, session kept for resumption")
		}
		return err
	}
	s.fail(err)
	return nil
}

// ourSideGone says whether err is a failure to write to the backend or to
// shut it down (not to read from it).
func ourSideGone(err error) bool {
	var be *stages.BackendError
	return errors.As(err, &be) && (be.Op == "write" || be.Op == "close")
}

// peerHasClosed says whether the peer has ended the session.
func (s *session) peerHasClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peerClosed
}

// linger says whether a link's socket ends with FIN and a bounded drain
// (stages.LingerClose), so that the last record arrives: a clean end or
// a failure with the peer still there. A dead backend, or a peer that let
// the grace time pass, is cut at once.
func (s *session) linger(linkErr error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.graceExpired && !backendGone(s.result) && !(linkErr != nil && linkLost(linkErr))
}

// endWithoutHalfClose ends a clean session's link on a backend that has no
// half-close (WebSocket, SPEC-v2.md §3d): there the peer's EOF would only
// come when the peer closes, and each side would wait for the other's
// until the grace time cut both. Once this side has written its last
// record (CLOSE) and the peer's CLOSE has arrived, nothing more crosses
// the backend: the link closes it (a WebSocket close, after everything
// written), and the reader's end is the end of input, as EOF would be.
// On a backend that can half-close it returns read and write unchanged.
func (s *session) endWithoutHalfClose(ctx context.Context, conn net.Conn, read, write func(context.Context) error) (func(context.Context) error, func(context.Context) error) {
	if stages.CanCloseWrite(conn) {
		return read, write
	}
	wrote := make(chan struct{})
	var closed atomic.Bool
	go func() {
		for _, ch := range []<-chan struct{}{wrote, s.peerDone} {
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
		closed.Store(true)
		_ = conn.Close()
	}()
	return func(ctx context.Context) error {
			err := read(ctx)
			if err != nil && ctx.Err() == nil && closed.Load() {
				return nil
			}
			return err
		}, func(ctx context.Context) error {
			err := write(ctx)
			if err == nil {
				close(wrote)
			}
			return err
		}
}
