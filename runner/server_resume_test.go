package runner

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/wire"
)

// A detached session on the server, driven by a fake clock: it waits for
// exactly resume_timeout and then expires; a claim under way at that
// moment gets claimGrace once more; a resumption handed in time is its
// next link. Nothing here waits on the real clock.
func TestAwaitLinkTimers(t *testing.T) {
	const timeout = 30 * time.Second
	log := logrus.NewEntry(logrus.New())
	log.Logger.SetLevel(logrus.PanicLevel)
	lost := errors.New("backend lost")
	for _, tc := range []struct {
		name    string
		claimed bool // a resumption claims the session before the timeout
		hand    bool // …and hands it its link
		expires time.Duration
	}{
		{name: "expires at resume_timeout", expires: timeout},
		{name: "a claim under way gets the grace once", claimed: true, expires: timeout + claimGrace},
		{name: "a resumption in time is the next link", claimed: true, hand: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := newFakeClock()
			r := newResumables(4, timeout, log)
			r.clock = fc
			s := buildSession(sessionParams{role: stages.Server, log: log, resume: &resumeParams{}})
			defer s.cancelHard()
			sl := r.register(resumeKey{id: wire.SessionID{1}}, s)
			got := make(chan *link, 1)
			go func() { got <- r.awaitLink(sl, lost) }()
			waitFor(t, "the session to wait", 10*time.Second, func() bool { return r.waiting() == 1 && fc.armed() == 1 })
			if tc.claimed {
				reply, claim := r.Claim(context.Background(), wire.UserID{}, wire.ClientResume{ID: wire.SessionID{1}})
				if reply.Status != wire.ResumeOK || claim != sl {
					t.Fatalf("claim: %v, %v; want the session", reply.Status, claim)
				}
			}
			if tc.hand {
				lk := &link{}
				if !r.hand(sl, lk) {
					t.Fatal("the waiting session did not take its link")
				}
				if l := <-got; l != lk || r.Expired.Load() != 0 || r.Resumed.Load() != 1 {
					t.Fatalf("awaitLink: %v, expired %d, resumed %d; want the handed link", l, r.Expired.Load(), r.Resumed.Load())
				}
				return
			}
			// Step the clock to just before the expiry, firing any timer
			// due on the way (the first is resume_timeout itself).
			for elapsed := time.Duration(0); elapsed < tc.expires-time.Nanosecond; {
				step := min(timeout, tc.expires-time.Nanosecond-elapsed)
				fc.Advance(step)
				elapsed += step
				waitFor(t, "the timer to be armed again", 10*time.Second, func() bool { return fc.armed() == 1 })
			}
			select {
			case l := <-got:
				t.Fatalf("awaitLink returned %v before %v", l, tc.expires)
			default:
			}
			if r.Expired.Load() != 0 {
				t.Fatalf("expired before %v", tc.expires)
			}
			fc.Advance(time.Nanosecond)
			if l := <-got; l != nil {
				t.Fatalf("awaitLink: %v; want none after the expiry", l)
			}
			if r.Expired.Load() != 1 || r.waiting() != 0 || !errors.Is(s.result, ErrResumeExpired) {
				t.Errorf("expired %d, waiting %d, session result %v; want one expiry", r.Expired.Load(), r.waiting(), s.result)
			}
			if !s.ending() {
				t.Error("the expired session is not ending")
			}
		})
	}
}
