package runner

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/wire"
)

// Resumption on the server (SPEC-v2.md §7b). Every resumable session is
// registered under (user, session id): a client key can only ever reach
// its own sessions. When a session loses its backend it waits, detached,
// for resume_timeout (awaitLink); a handshake whose resume extension
// names it claims it (Claim, called by the handshake before it answers),
// and the new connection becomes its next link. Expiry, a refused claim
// or the server's end resets its streams and frees everything.
//
// Locking: resumables.mu guards the table and every slot's fields; a
// session's own state has its own lock.

// Errors that end a detached session on the server.
var (
	// ErrResumeExpired: the client did not come back in time.
	ErrResumeExpired = errors.New("detached session expired (resume_timeout)")
	// errResumeConflict: a resumption that cannot be served ended the
	// session (counts out of range).
	errResumeConflict = errors.New("session could not be resumed")
	// errTooManyDetached: max_detached sessions wait already.
	errTooManyDetached = errors.New("too many detached sessions (max_detached)")
	// errSuperseded ends a resuming connection the client left for a
	// later one before the server had handed it the session.
	errSuperseded = errors.New("a later resumption superseded this one")
)

// takeoverWait bounds how long a resumption waits for the session's old
// link to stop; claimGrace how long a claimed session waits for the
// claiming handshake to finish.
const (
	takeoverWait = 5 * time.Second
	claimGrace   = 10 * time.Second
)

type resumeKey struct {
	user wire.UserID
	id   wire.SessionID
}

// resumeSlot is a registered session.
type resumeSlot struct {
	key     resumeKey
	sess    *session
	attach  chan *link    // the claimed connection, to awaitLink
	idle    chan struct{} // closed when the session waits without a link
	waiting bool          // in awaitLink
	// settled is non-nil while a handshake holds the slot (claimed); it
	// is closed when that claim is handed its link or aborted.
	settled chan struct{}
	// superseded: a later resumption waits for this claim; its link,
	// which the client has given up on, is closed when handed.
	superseded bool
	gone       bool // ended or expired
}

// unclaimLocked ends the slot's claim (handed or aborted) and wakes a
// resumption waiting for it.
func (sl *resumeSlot) unclaimLocked() {
	sl.superseded = false
	if sl.settled != nil {
		close(sl.settled)
		sl.settled = nil
	}
}

// resumables is the server's table of resumable sessions.
type resumables struct {
	mu       sync.Mutex
	slots    map[resumeKey]*resumeSlot
	detached int
	max      int
	timeout  time.Duration
	log      *logrus.Entry
	// clock makes the timers of expiry, the claim grace and the takeover
	// wait (realClock; tests set a fake one before the server runs).
	clock clock
	// Detached counts sessions that lost a backend; Resumed those that
	// got a new one; Expired those that timed out waiting; TakenOver the
	// backends a resumption cut (the client saw them die first). New
	// counts resumption offers for a session not held (a new session
	// starts), Lost those answered "lost".
	Detached, Resumed, Expired, TakenOver, New, Lost Counter
}

// waiting is the count of detached sessions now.
func (r *resumables) waiting() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return int64(r.detached)
}

func newResumables(max int, timeout time.Duration, log *logrus.Entry) *resumables {
	return &resumables{slots: make(map[resumeKey]*resumeSlot), max: max, timeout: timeout, log: log, clock: realClock{}}
}

// register adds a new session under key; false if the key is taken
// (the session then ends with its first link).
func (r *resumables) register(key resumeKey, s *session) *resumeSlot {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, taken := r.slots[key]; taken {
		return nil
	}
	sl := &resumeSlot{key: key, sess: s, attach: make(chan *link), idle: make(chan struct{})}
	r.slots[key] = sl
	return sl
}

// remove takes a slot out of the table (the session ended).
func (r *resumables) remove(sl *resumeSlot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(sl)
}

func (r *resumables) removeLocked(sl *resumeSlot) {
	if sl.gone {
		return
	}
	sl.gone = true
	if r.slots[sl.key] == sl {
		delete(r.slots, sl.key)
	}
	if sl.waiting {
		sl.waiting = false
		r.detached--
	}
}

// Claim implements stages.ResumeHook: it finds the session, stops its
// link if it still has one, and holds it for this handshake.
func (r *resumables) Claim(ctx context.Context, user wire.UserID, offer wire.ClientResume) (wire.ServerResume, any) {
	reply, claim := r.claim(ctx, user, offer)
	switch reply.Status {
	case wire.ResumeNew:
		r.New.Add()
	case wire.ResumeLost:
		r.Lost.Add()
	}
	return reply, claim
}

func (r *resumables) claim(ctx context.Context, user wire.UserID, offer wire.ClientResume) (wire.ServerResume, any) {
	key := resumeKey{user, offer.ID}
	deadline := r.clock.NewTimer(takeoverWait)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		sl, ok := r.slots[key]
		switch {
		case !ok:
			r.mu.Unlock()
			return wire.ServerResume{Status: wire.ResumeNew, Lanes: min(offer.Lanes, wire.MaxLanes)}, nil
		case sl.sess.ls != nil:
			// A session over lanes: the connection is one more lane
			// (SPEC-v2.md §7d), or the first of a detached session.
			s := sl.sess
			if offer.Lanes == 0 || offer.Received > s.ls.stage.Sent() || sl.gone {
				r.removeLocked(sl)
				r.mu.Unlock()
				s.fail(errResumeConflict)
				return wire.ServerResume{Status: wire.ResumeLost}, nil
			}
			r.mu.Unlock()
			return wire.ServerResume{Status: wire.ResumeOK, Received: s.rs.Received(), Lanes: uint8(s.ls.count)}, sl
		case sl.settled != nil: // claimed
			// An earlier resumption holds the session and has not been
			// handed its link yet: the client gave up on it (its
			// connection was cut, or rotation retired it at once) and
			// came back with this one, the only one it still uses. The
			// earlier claim is superseded: wait until it is settled (its
			// link closed when handed, or its handshake aborted), then
			// claim the detached session — never longer than a takeover.
			sl.superseded = true
			settled := sl.settled
			r.mu.Unlock()
			select {
			case <-settled:
				continue
			case <-sl.sess.closing:
			case <-deadline.Chan():
			case <-ctx.Done():
			}
			return wire.ServerResume{Status: wire.ResumeLost}, nil
		case sl.waiting:
			s := sl.sess
			if offer.Received < s.resend.Acked() || offer.Received > s.resend.Sent() {
				r.removeLocked(sl)
				r.mu.Unlock()
				r.log.WithFields(logrus.Fields{"offered": offer.Received, "acked": s.resend.Acked(), "sent": s.resend.Sent()}).Warn("resumption out of range: session ended")
				s.fail(errResumeConflict)
				return wire.ServerResume{Status: wire.ResumeLost}, nil
			}
			sl.settled = make(chan struct{})
			r.mu.Unlock()
			// The old link has stopped: this count is final.
			return wire.ServerResume{Status: wire.ResumeOK, Received: s.rs.Received()}, sl
		}
		// The session still has its old link (the client saw it die
		// first): cut it, and wait until the session waits for a new one.
		idle := sl.idle
		r.mu.Unlock()
		r.TakenOver.Add()
		sl.sess.cut(errTakenOver)
		select {
		case <-idle:
		case <-sl.sess.closing:
		case <-deadline.Chan():
			return wire.ServerResume{Status: wire.ResumeLost}, nil
		case <-ctx.Done():
			return wire.ServerResume{Status: wire.ResumeLost}, nil
		}
	}
}

// Abort implements stages.ResumeHook: the claiming handshake failed.
func (r *resumables) Abort(res *stages.Resumption) {
	if sl, ok := res.Claim.(*resumeSlot); ok {
		r.mu.Lock()
		sl.unclaimLocked()
		r.mu.Unlock()
	}
}

// hand gives a claimed session its new link; false if the session ended
// meanwhile (the caller closes the connection).
func (r *resumables) hand(sl *resumeSlot, lk *link) bool {
	select {
	case sl.attach <- lk:
		if sl.sess.ls != nil {
			r.Resumed.Add() // a lane (awaitLink counts a single link)
		}
		return true
	case <-sl.sess.closing:
		return false
	}
}

// awaitLink is a server session's next link: the session waits, detached,
// for its client to resume it within resume_timeout.
func (r *resumables) awaitLink(sl *resumeSlot, lost error) *link {
	s := sl.sess
	r.mu.Lock()
	if sl.gone || r.detached >= r.max {
		r.mu.Unlock()
		if !sl.gone {
			s.fail(errTooManyDetached)
		}
		return nil
	}
	r.detached++
	sl.waiting = true
	close(sl.idle)
	r.mu.Unlock()
	r.Detached.Add()
	s.p.log.WithError(lost).WithField("resume_timeout", r.timeout.String()).Info("backend lost: session detached, waiting for the client")
	defer func() {
		r.mu.Lock()
		if sl.waiting {
			sl.waiting = false
			r.detached--
		}
		sl.unclaimLocked()
		sl.idle = make(chan struct{})
		r.mu.Unlock()
	}()
	t := r.clock.NewTimer(r.timeout)
	defer t.Stop()
	graced := false
	for {
		select {
		case lk := <-sl.attach:
			r.mu.Lock()
			if !sl.superseded {
				r.mu.Unlock()
				r.Resumed.Add()
				return lk
			}
			// A later resumption waits: this connection is one the
			// client has left. The session stays detached for it.
			sl.unclaimLocked()
			r.mu.Unlock()
			_ = lk.conn.Close()
			s.p.log.Info("resuming connection left by the client for a later one: closed")
			if lk.capture != nil {
				lk.capture.End(errSuperseded)
			}
		case <-s.closing:
			return nil
		case <-t.Chan():
			r.mu.Lock()
			if sl.settled != nil && !graced {
				// A handshake is finishing: give it its time, once.
				graced = true
				r.mu.Unlock()
				t.Reset(claimGrace)
				continue
			}
			r.removeLocked(sl)
			r.mu.Unlock()
			r.Expired.Add()
			s.fail(ErrResumeExpired)
			return nil
		}
	}
}
