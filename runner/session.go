package runner

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"usocks/runner/capture"
	"usocks/stages"
	"usocks/wire"
	v1 "usocks/wire/v1"
)

// A session is a tunnel between client and server: the stream actors, the
// demux and mux, and (resumable v2 sessions, SPEC-v2.md §7b) the resend
// stage. It runs over one backend connection at a time, a *link*: the
// backend reader and writer and the record stages bound to that
// connection's keys (session_link.go). The two are separate units:
//
//	link:    backend reader ─► decrypt ──┐        ┌── encrypt ◄─ [defence] ◄─ backend writer side
//	session:                   frames ─► demux ─► stream actors ─► mux ─► [resend] ─► link input
//
// build makes the session's channels and stages, run starts them and runs
// links one after another, end reports how it finished. A link runs in an
// errgroup of its own; the group's first error says why the link ended,
// and is classified: *link lost* (the backend died: socket error, EOF
// without CLOSE, keepalive timeout, and in resumable sessions a record
// that fails authentication) or *fatal* (protocol error, peer RESET,
// seal failure, resumption refused). A resumable session outlives a lost
// link: the client dials a new one and resumes, the server waits
// resume_timeout for the client to come back (session_resume.go). Every
// other session — v1, a v2 peer without resumption, resumption off —
// ends with its first link, and its streams are reset.
//
// Ending: a clean end (ctx done here, or CLOSE from the peer) makes the mux
// send CLOSE as its last frame; the session then waits up to GraceTimeout
// for the peer's CLOSE and EOF. A failure makes the mux send RESET (v2, or
// v1 after a bad digest or header) or nothing (v1's first-packet rule), and
// the session is cut as soon as the writer has flushed.

// GraceTimeout bounds a graceful close: after sending CLOSE, how long the
// session waits for the peer's CLOSE and EOF before it is cut.
const GraceTimeout = 3 * time.Second

// v1Keys is the record state of a v1 session.
type v1Keys struct {
	seal *v1.Sealer
	open *v1.Opener
}

// sessionParams is everything one session needs.
type sessionParams struct {
	role       stages.Role
	conn       net.Conn
	keys       *stages.Keys // v2
	v1         *v1Keys      // v1 (legacy); keys is nil then
	accept     <-chan net.Conn
	frontend   stages.Frontend
	maxStreams int
	idle, half time.Duration        // stream timeouts (≤ 0: off)
	keepalive  time.Duration        // PING interval (0: off)
	tuning     *DefenseTuning       // v2: expert overrides of the agreed defence policy
	relay      stages.DatagramRelay // client: relay for UDP associations (nil: none)
	rekeyAfter uint64               // records under one key (0: default)
	drain      <-chan struct{}      // client: closed to rotate away from this backend
	log        *logrus.Entry
	stats      *stages.Stats
	mem        *stages.MemBudget      // receive memory of this session (nil: unbounded)
	ended      func(stages.StreamEnd) // called as each stream ends (access log)
	capture    *capture.Session       // nil: capture off (nil taps); the first link's (later links bring their own)
	resume     *resumeParams          // v2 with resumption agreed; nil: one link
	rotate     *rotateParams          // client, resumable: link rotation (nil: off)
}

// resumeParams make a session resumable.
type resumeParams struct {
	id     wire.SessionID
	buffer int // resend buffer, bytes (0: default)
	// kept, if set, sums the bytes of the side's resend buffers (metrics).
	kept *atomic.Int64
	// next finds the link after a lost one: the client dials and resumes,
	// the server waits for the client. nil means the session must end
	// (next has called fail, or the session is closing).
	next func(s *session, lost error) *link
	// started, if set, is called once the session runs (the server
	// registers it for resumption).
	started func(s *session)
	// lanes is the agreed lane count of a session over lanes (0: one
	// link at a time).
	lanes int
}

// newV1Keys sets up both directions of a v1 record channel.
func newV1Keys(key string) (*v1Keys, error) {
	k := v1.DeriveKey(key)
	s, err := v1.NewRandomSealer(k, rand.Reader)
	if err != nil {
		return nil, err
	}
	return &v1Keys{seal: s, open: v1.NewOpener(k)}, nil
}

// needsReset says whether a session error is worth a RESET record.
func needsReset(legacy bool, err error) bool {
	if legacy {
		return v1.NeedsReset(err)
	}
	return errors.Is(err, wire.ErrAuth) || errors.Is(err, stages.ErrProtocol) || errors.Is(err, stages.ErrTruncated)
}

// session is one tunnel; see the top of this file.
type session struct {
	p          sessionParams
	legacy     bool
	hard       context.Context // cancelled to cut everything at once
	cancelHard context.CancelFunc

	mu                   sync.Mutex
	result               error
	failed, graceExpired bool
	peerClosed           bool // the peer sent CLOSE (v1: or EOF)
	final                wire.FrameType
	finalOK              bool
	cutLink              context.CancelCauseFunc // the running link's; nil between links

	closing   chan struct{} // closed when the end starts
	closeOnce sync.Once
	peerDone  chan struct{} // closed when the peer's CLOSE (v1: or EOF) arrives

	frames        chan stages.Frame // decrypt → demux (the session's, in resumable sessions)
	data, control chan stages.Frame // stream actors → mux
	batches       chan stages.Batch // mux → resend, or mux → the link
	dmx           *stages.Demux
	mux           *stages.Mux
	resend        *stages.Resend       // resumable sessions on one link only
	defCarry      *stages.DefenceCarry // the defence state from link to link (with resend)
	rs            *stages.ResumeState  // resumable sessions only
	ls            *laneSet             // resumable sessions over lanes only
	demuxDone     chan struct{}
	links         int // links run so far (the run loop's)
}

// runSession runs a session on an established backend until it ends.
// It returns nil for a clean close (either side), an error otherwise.
func runSession(ctx context.Context, p sessionParams) error {
	s := buildSession(p)
	first := &link{conn: p.conn, keys: p.keys, capture: p.capture}
	return s.end(s.run(ctx, first))
}

// buildSession makes the session's channels and its lasting stages.
func buildSession(p sessionParams) *session {
	s := &session{p: p, legacy: p.v1 != nil, final: wire.FrameClose, finalOK: true,
		closing: make(chan struct{}), peerDone: make(chan struct{}), demuxDone: make(chan struct{})}
	s.hard, s.cancelHard = context.WithCancel(context.Background())
	s.frames = make(chan stages.Frame, stages.FrameQueueLen)
	s.data = make(chan stages.Frame, stages.DataQueueLen)
	s.control = make(chan stages.Frame, stages.ControlQueueLen)
	s.batches = make(chan stages.Batch, stages.BatchQueueLen)
	// The peer's CLOSE (or a v1 peer's EOF) ends the session, and a clean
	// end always sends our CLOSE before our FIN, whoever began (SPEC-v2.md
	// §7). The original v1 closes its socket right after its close record,
	// so ours may meet a reset socket: linkErr takes a backend error after
	// a v1 peer's close for the end it is.
	peerClosing := func() {
		s.mu.Lock()
		if !s.peerClosed {
			close(s.peerDone)
		}
		s.peerClosed = true
		s.mu.Unlock()
		s.startClose()
	}
	s.mux = &stages.Mux{Control: s.control, Data: s.data, Out: s.batches, Shutdown: s.closing, Log: s.stage("mux"),
		Final: func() (wire.FrameType, bool) { s.mu.Lock(); defer s.mu.Unlock(); return s.final, s.finalOK }}
	s.dmx = &stages.Demux{
		Role: p.role, In: s.frames, Data: s.data, Control: s.control,
		Accept: p.accept, Frontend: p.frontend, MaxStreams: p.maxStreams, Legacy: s.legacy,
		IdleTimeout: max(p.idle, 0), HalfClosedTimeout: max(p.half, 0), KeepAlive: p.keepalive, Relay: p.relay, Memory: p.mem,
		Closing: s.closing, PeerClosing: peerClosing, Drain: p.drain, Drained: s.startClose, Log: s.stage("demux"), Stats: p.stats,
		Ended: p.ended,
	}
	if p.resume != nil {
		s.rs = stages.NewResumeState()
		if p.resume.lanes > 0 {
			s.ls = newLaneSet(s, p.resume.lanes)
		} else {
			s.resend = &stages.Resend{In: s.batches, State: s.rs, Limit: p.resume.buffer, Total: p.resume.kept, Log: s.stage("resend")}
			s.resend.Init()
			// Links follow one another: each one's defence goes on with
			// the episode the last one was in.
			s.defCarry = new(stages.DefenceCarry)
		}
		s.dmx.LinkDead = func(err error) { s.cut(err) }
	}
	return s
}

// stage is the logger of one stage.
func (s *session) stage(name string) *logrus.Entry {
	return s.p.log.WithFields(logrus.Fields{"layer": stageLayers[name], "stage": name})
}

// startClose starts the end of the session: ours (ctx), the peer's CLOSE,
// or a failure.
func (s *session) startClose() {
	s.closeOnce.Do(func() {
		close(s.closing)
		time.AfterFunc(GraceTimeout, func() {
			s.mu.Lock()
			s.graceExpired = true
			s.mu.Unlock()
			if s.hard.Err() == nil {
				s.p.stats.GraceCuts.Add(1) // still running: the grace cuts it
			}
			s.cancelHard()
		})
	})
}

// ending says whether the end has started.
func (s *session) ending() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// fail records the session's first error and starts the end: the mux
// sends RESET where that helps.
func (s *session) fail(err error) {
	s.mu.Lock()
	if !s.failed {
		s.failed, s.result = true, err
		s.final, s.finalOK = wire.FrameReset, needsReset(s.legacy, err)
	}
	s.mu.Unlock()
	s.startClose()
}

func (s *session) isFailed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// cut ends the running link with cause (keepalive timeout, a takeover by
// a resuming connection); nothing happens between links.
func (s *session) cut(cause error) {
	s.mu.Lock()
	c := s.cutLink
	s.mu.Unlock()
	if c != nil {
		c(cause)
	}
}

// run starts the lasting stages and runs links until the session ends;
// it returns the session's result.
func (s *session) run(ctx context.Context, first *link) error {
	defer s.cancelHard()
	stopCtx := context.AfterFunc(ctx, s.startClose)
	defer stopCtx()
	// The lasting stages share no context that an error cancels: a
	// failure must still let the mux send RESET through the link. Their
	// errors end the session through fail.
	var tunnel errgroup.Group
	s.goTunnel(&tunnel, "demux", s.dmx.Run, s.demuxDone)
	s.goTunnel(&tunnel, "mux", s.mux.Run, nil)
	if s.resend != nil {
		s.goTunnel(&tunnel, "resend", s.resend.Run, nil)
	}
	if s.ls != nil {
		s.goTunnel(&tunnel, "lanes", s.ls.stage.Run, nil)
	}
	if s.p.resume != nil && s.p.resume.started != nil {
		s.p.resume.started(s)
	}
	if s.ls != nil {
		s.runLanes(first)
		first = nil
	}
	for lk := first; lk != nil; {
		err := s.runCapturedLink(lk, first)
		lk = nil
		switch {
		case err == nil || s.ending():
		case s.resend != nil && errors.Is(err, errRotated):
			s.p.log.Info("rotating: resuming the session on a new backend")
			start := time.Now()
			if lk = s.p.resume.next(s, err); lk != nil {
				s.p.rotate.rotated(time.Since(start))
			}
		case s.resend != nil && linkLost(err):
			s.p.log.WithError(err).Info("backend lost, session kept for resumption")
			lk = s.p.resume.next(s, err)
		default:
			s.fail(err)
		}
	}
	if s.rs != nil {
		// No link will hand the demux more frames: it sees the end (a
		// clean one if the peer's CLOSE came through).
		close(s.frames)
	}
	select {
	case <-s.demuxDone:
	case <-s.hard.Done():
	}
	s.cancelHard()
	if err := tunnel.Wait(); err != nil {
		s.fail(err) // recorded already unless it came last
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

// end reports the session's result to the capture and returns it.
func (s *session) end(result error) error {
	s.p.capture.End(result)
	return result
}

// goTunnel runs a lasting stage. Its error ends the session.
func (s *session) goTunnel(g *errgroup.Group, name string, f func(context.Context) error, done chan struct{}) {
	g.Go(func() error {
		err := s.runStage(s.hard, name, f)
		if done != nil {
			defer close(done)
		}
		if errors.Is(err, stages.ErrPeerClosed) || (err != nil && s.hard.Err() != nil) {
			return nil // a clean end, or the cut after one
		}
		if err != nil {
			s.fail(err)
		}
		return err
	})
}

// runStage runs one stage, logging its start and stop; a panic becomes
// its error (errgroup does not recover panics: the session is the
// boundary).
func (s *session) runStage(ctx context.Context, name string, f func(context.Context) error) (err error) {
	log := s.stage(name)
	defer func() {
		if r := recover(); r != nil {
			log.WithField("panic", r).Error("stage panicked\n" + string(debug.Stack()))
			err = fmt.Errorf("stage %s panicked: %v", name, r)
		}
	}()
	log.Debug("stage started")
	defer log.Debug("stage stopped")
	return f(ctx)
}

// backendGone says whether a session error means that nothing more can
// reach the peer (socket error, keepalive timeout).
func backendGone(err error) bool {
	var be *stages.BackendError
	return errors.As(err, &be) || errors.Is(err, stages.ErrPeerDead) || errors.Is(err, errTakenOver) || errors.Is(err, errRotated)
}

// linkLost says whether a link's error is the loss of its backend, which
// a resumable session survives: the backend died (socket error, EOF
// without CLOSE, inside a record, keepalive timeout), a resuming
// connection took the session over, or a record failed authentication.
// A record that fails to open is treated like a cut connection: to the
// receiver a middlebox corrupting bytes and an attacker are the same, and
// either could cut the connection instead; nothing from the bad record is
// used, and the next link has fresh keys.
func linkLost(err error) bool {
	return backendGone(err) || errors.Is(err, stages.ErrInsecureClose) || errors.Is(err, stages.ErrTruncated) ||
		errors.Is(err, wire.ErrAuth)
}

// stageLayers is the layer of each stage of a session, for the "layer"
// log field (the frontends log as "frontend").
var stageLayers = map[string]string{
	"backend-reader": "backend", "backend-writer": "backend",
	"decrypt": "record", "encrypt": "record", "defence": "record",
	"demux": "tunnel", "mux": "tunnel", "resend": "tunnel", "lanes": "tunnel",
}
