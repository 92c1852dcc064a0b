package runner

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/wire"
)

// Graceful drain of a stopping server (SIGTERM, SIGINT, or Run's ctx
// done):
//
//  1. The listener closes and connections still in their handshake are
//     closed: no new backend connections, no new sessions.
//  2. Every running session drains: a SYN from the client is refused with
//     RST, running streams go on until they end.
//  3. A session whose streams have all ended closes cleanly (CLOSE) at
//     once. The last bytes of a stream may still be on their way to the
//     client (the protocol has no acknowledgement of delivery) — the
//     server's stream ends once it has queued its FIN — but they are queued
//     before the CLOSE, and a receiver that gets CLOSE lets every stream
//     whose FIN it has received deliver its data first (SPEC-v2.md §7), so
//     nothing is lost.
//  4. At drain_timeout the sessions still running are closed (CLOSE; their
//     remaining streams are reset), as they are at once when drain_timeout
//     is 0.
//
// Run returns when every session has ended: at most drain_timeout plus
// GraceTimeout after the stop. The server's state (sessions, streams, what
// they had buffered) does not survive the process, so a restart resets
// whatever outlived the drain, resumable sessions or not.
//
// During the drain the client is not told to move new streams elsewhere
// (the protocol has no such message), so its apps' new connections are
// reset until the session closes and the client reconnects.

// DefaultDrainTimeout is drain_timeout's default.
const DefaultDrainTimeout = 30 * time.Second

// errDraining refuses new streams of a draining server.
var errDraining = errors.New("server is stopping: no new streams")

// drainer is the server's drain state; its zero value is not usable
// (newDrainer).
type drainer struct {
	ch     chan struct{}   // closed when the drain starts
	hard   context.Context // cancelled when running sessions must close
	cancel context.CancelFunc
	once   sync.Once
	mu     sync.Mutex
	timer  *time.Timer
}

func newDrainer() *drainer {
	hard, cancel := context.WithCancel(context.Background())
	return &drainer{ch: make(chan struct{}), hard: hard, cancel: cancel}
}

// start begins the drain; after timeout (at once if ≤ 0) the running
// sessions are closed.
func (d *drainer) start(timeout time.Duration, log *logrus.Entry) {
	d.once.Do(func() {
		close(d.ch)
		if timeout <= 0 {
			d.cancel()
			return
		}
		log.WithField("drain_timeout", timeout.String()).Info("server draining: no new connections or streams; running streams may finish")
		d.mu.Lock()
		d.timer = time.AfterFunc(timeout, func() {
			select {
			case <-d.hard.Done():
			default:
				log.WithField("drain_timeout", timeout.String()).Warn("drain timeout: closing the sessions still running")
				d.cancel()
			}
		})
		d.mu.Unlock()
	})
}

// started is closed when the drain starts.
func (d *drainer) started() <-chan struct{} { return d.ch }

// release ends the drain state when Run returns (every session has ended).
func (d *drainer) release() {
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
	}
	d.mu.Unlock()
	d.cancel()
}

// detach returns a context for one session: it keeps ctx's values, is
// not cancelled with ctx (the server's stop starts a drain instead), and
// is cancelled when the drain runs out.
func (d *drainer) detach(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(d.hard, cancel)
	return c, func() { stop(); cancel() }
}

// frontend wraps the server's frontend so that streams opened during the
// drain are refused (the demux asks at every SYN).
func (d *drainer) frontend(fe stages.Frontend) stages.Frontend {
	return &drainingFrontend{fe: fe, draining: d.ch}
}

// drainingFrontend is a stages.FrontendSource: fe (or, if fe is one, its
// current frontend) until the drain starts, then one that refuses.
type drainingFrontend struct {
	fe       stages.Frontend
	draining <-chan struct{}
}

func (f *drainingFrontend) Current() stages.Frontend {
	select {
	case <-f.draining:
		return refusing{errDraining}
	default:
	}
	return current(f.fe)
}

func (f *drainingFrontend) Open(ctx context.Context, st stages.StreamIO) (net.Conn, error) {
	return f.Current().Open(ctx, st)
}

// current is fe's frontend for a new stream.
func current(fe stages.Frontend) stages.Frontend {
	if src, ok := fe.(stages.FrontendSource); ok {
		return src.Current()
	}
	return fe
}

// sessionDrain follows one session's streams for the drain: every stream
// the demux starts calls its frontend once (Open or OpenTarget) and ends
// once (Demux.Ended), so their difference is the streams running.
type sessionDrain struct {
	mu   sync.Mutex
	live int
	zero chan struct{} // cap 1: live came down to 0
}

func newSessionDrain() *sessionDrain { return &sessionDrain{zero: make(chan struct{}, 1)} }

func (c *sessionDrain) add(n int) {
	c.mu.Lock()
	c.live += n
	z := c.live == 0
	c.mu.Unlock()
	if z {
		select {
		case c.zero <- struct{}{}:
		default:
		}
	}
}

func (c *sessionDrain) running() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}

// ended counts a stream's end (call it from Demux.Ended).
func (c *sessionDrain) ended() { c.add(-1) }

// frontend wraps the session's frontend (outermost, so that every Open
// is counted, even one a limit refuses).
func (c *sessionDrain) frontend(fe stages.Frontend) stages.Frontend {
	return &countingFrontend{fe: fe, c: c}
}

// watch closes the session (closeSession) once the drain has started and
// the session has no stream running; it returns early when done is closed
// (the session ended).
func (c *sessionDrain) watch(draining <-chan struct{}, closeSession func(), done <-chan struct{}) {
	select {
	case <-draining:
	case <-done:
		return
	}
	for c.running() > 0 {
		select {
		case <-c.zero:
		case <-done:
			return
		}
	}
	closeSession()
}

// countingFrontend counts every stream opened through it; it keeps the
// interfaces of what it wraps (FrontendSource, TargetFrontend).
type countingFrontend struct {
	fe stages.Frontend
	c  *sessionDrain
}

func (f *countingFrontend) Current() stages.Frontend {
	inner := current(f.fe)
	co := &countedOpen{fe: inner, c: f.c}
	if tf, ok := inner.(stages.TargetFrontend); ok {
		return &countedTargetOpen{co, tf}
	}
	return co
}

func (f *countingFrontend) Open(ctx context.Context, st stages.StreamIO) (net.Conn, error) {
	return f.Current().Open(ctx, st)
}

type countedOpen struct {
	fe stages.Frontend
	c  *sessionDrain
}

func (f *countedOpen) Open(ctx context.Context, st stages.StreamIO) (net.Conn, error) {
	f.c.add(1)
	return f.fe.Open(ctx, st)
}

type countedTargetOpen struct {
	*countedOpen
	tf stages.TargetFrontend
}

func (f *countedTargetOpen) OpenTarget(ctx context.Context, st stages.StreamIO, t wire.Target) (net.Conn, error) {
	f.c.add(1)
	return f.tf.OpenTarget(ctx, st, t)
}
