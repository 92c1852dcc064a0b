package runner

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"usocks/stages"
	"usocks/wire"
)

// Rotation in a resumable session (SPEC-v2.md §6b) retires the running
// link on purpose and resumes the same session on a new connection (§7b).
// Retiring: the client's backend writer finishes the write under way,
// half-closes the old connection (FIN, or TLS close_notify) and sends
// nothing more on it; the link keeps reading until
// the server, which sees the backend end without CLOSE (a lost link),
// closes its side: what the server had already written arrives and is
// counted, so the next connection resends only what never left the
// server's queues. The link then ends as lost and the client resumes at
// once. A server that does not close within RetireTimeout (a frozen
// flow) has the old connection cut; the resend buffers still cover every
// frame. Sessions that are not resumable rotate as before: a new session,
// the old one drains.

// errRotated ends a link that rotation retires.
var errRotated = errors.New("backend rotated")

// MinRotateBytes is the smallest rotate_bytes.
const MinRotateBytes = 16 << 10

// RetireTimeout bounds how long a retired link waits for the server to
// close its side before it is cut.
const RetireTimeout = time.Second

// rotateParams make a resumable client session rotate its links.
type rotateParams struct {
	after   time.Duration             // 0: no time bound
	bytes   int64                     // bytes sent and received on one link (0: no bound)
	rotated func(pause time.Duration) // a link retired by rotation was replaced after pause
}

// retirement is the rotation state of one link.
type retirement struct {
	fired atomic.Bool
	now   chan struct{} // closed when fired: the backend writer's Retire
	once  sync.Once
	timer *time.Timer // rotate_after
	cut   *time.Timer // RetireTimeout
	mu    sync.Mutex
}

// retired says whether the link is being retired by rotation.
func (r *retirement) retired() bool { return r != nil && r.fired.Load() }

// stop disarms the timers.
func (r *retirement) stop() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.timer != nil {
		r.timer.Stop()
	}
	if r.cut != nil {
		r.cut.Stop()
	}
}

// armRotation starts retiring the link when its jittered time or byte
// bound is reached; the bytes are those the backend reader and writer
// see. nil when the session does not rotate its links.
func (s *session) armRotation(lk *link, rd *stages.BackendReader, wr *stages.BackendWriter, cut context.CancelCauseFunc) *retirement {
	rp := s.p.rotate
	if rp == nil || s.rs == nil || (rp.after <= 0 && rp.bytes <= 0) {
		return nil
	}
	conn := lk.conn
	r := &retirement{now: make(chan struct{})}
	wr.Retire = r.now
	fire := func() {
		r.once.Do(func() {
			r.fired.Store(true)
			if s.ls != nil {
				// A lane: GOING_AWAY, then its input closes and its
				// writer half-closes; its replacement is dialled now.
				go s.ls.stage.Retire(s.hard, lk.lane, wire.GoingAwayRotation)
				lk.retire()
				r.mu.Lock()
				r.cut = time.AfterFunc(RetireTimeout, func() { cut(errRotated) })
				r.mu.Unlock()
				return
			}
			if _, ok := conn.(interface{ CloseWrite() error }); !ok {
				cut(errRotated)
				return
			}
			close(r.now)
			r.mu.Lock()
			r.cut = time.AfterFunc(RetireTimeout, func() { cut(errRotated) })
			r.mu.Unlock()
		})
	}
	if rp.after > 0 {
		r.mu.Lock()
		r.timer = time.AfterFunc(jittered(rp.after), fire)
		r.mu.Unlock()
	}
	if rp.bytes > 0 {
		limit := jittered(rp.bytes)
		var n atomic.Int64
		count := func(tap func([]byte)) func([]byte) {
			return func(b []byte) {
				if tap != nil {
					tap(b)
				}
				if n.Add(int64(len(b))) >= limit {
					fire()
				}
			}
		}
		rd.Tap, wr.Tap = count(rd.Tap), count(wr.Tap)
	}
	return r
}

// jittered returns d ± 25 %, so that rotations do not happen in step.
func jittered[T ~int64](d T) T {
	return d*3/4 + T(mrand.Int64N(int64(d/2)+1))
}
