package runner

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

// Resumption on the client (SPEC-v2.md §7b): when a resumable session
// loses its backend, the client keeps the session — its apps see a pause
// — and dials the same server again with the backoff of reconnects,
// offering the session id and the count of numbered frames it received.
// It gives up after resume_timeout, or when the server answers that it
// no longer holds the session: the streams are then reset, and the
// connection the server answered on carries the next session.

// failoverResume bounds resumption when the client has several servers.
const failoverResume = 2 * time.Second

// resume finds the next link of session s after lost; nil when the
// session must end (it has called s.fail, or the session is ending).
func (c *Client) resume(ctx context.Context, s *session, srv int, id wire.SessionID, lost error) *link {
	window := c.cfg().ResumeTimeout
	if len(c.servers.servers) > 1 {
		// With other servers to fail over to, a server that stays
		// unreachable is given up on quickly: new streams then go to
		// another (the old ones are reset).
		window = min(window, failoverResume)
	}
	clk := c.resumeClock
	deadline := clk.Now().Add(window)
	wait := c.Backoff.Min
	log := s.p.log.WithField("resume_timeout", window.String())
	for attempt := 1; ; attempt++ {
		if s.ending() || ctx.Err() != nil {
			return nil
		}
		dctx, cancel := untilClock(ctx, clk, deadline)
		stop := context.AfterFunc(s.hard, cancel)
		est, err := c.connect(dctx, srv, id, s.rs.Received())
		stop()
		cancel()
		switch {
		case err == nil && est.keys.Resume != nil && est.keys.Resume.Reply.Status == wire.ResumeOK:
			c.Resumes.Add(1)
			log.WithField("attempt", attempt).Info("session resumed on a new backend")
			return &link{conn: est.conn, keys: est.keys, peerRecv: est.keys.Resume.Reply.Received, capture: est.sc}
		case err == nil:
			// The server started a new session on this connection
			// instead: it carries the next session of this client. Not
			// for a session over lanes: each of its lanes may have
			// started one under the old id, so the next session takes
			// a fresh id (the server ends those as lost backends).
			if s.ls != nil || !c.carry.CompareAndSwap(nil, est) {
				_ = est.conn.Close()
				est.sc.End(ErrResumeRefused)
			}
			c.resumeNew.Add(1)
			s.fail(ErrResumeRefused)
			return nil
		case permanent(err) != nil:
			s.fail(permanent(err))
			return nil
		}
		if !clk.Now().Before(deadline) {
			c.resumeExpired.Add(1)
			s.fail(ErrResumeTimeout)
			return nil
		}
		log.WithError(err).WithFields(logrus.Fields{"attempt": attempt, "retry_in": wait.String()}).Warn("resumption failed, retrying")
		t := clk.NewTimer(min(wait, deadline.Sub(clk.Now())))
		select {
		case <-t.Chan():
		case <-s.closing:
		case <-ctx.Done():
		}
		t.Stop()
		wait = min(2*wait, c.Backoff.Max)
	}
}

// untilClock is ctx, ended too (cause context.DeadlineExceeded) when clk
// reaches deadline: a dial gets no more than what is left of the resume
// window.
func untilClock(ctx context.Context, clk clock, deadline time.Time) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithCancelCause(ctx)
	t := clk.NewTimer(deadline.Sub(clk.Now()))
	go func() {
		select {
		case <-t.Chan():
			cancel(context.DeadlineExceeded)
		case <-dctx.Done():
		}
	}()
	return dctx, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}
