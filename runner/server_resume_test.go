package runner

import (
	"context"
	"errors"
	"io"
	"net"
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

// Two resumptions of one session, the second before the first was handed
// its link (the client left the first connection — cut, or retired by
// rotation at once — and came back): the second waits for the first to
// settle and then resumes the session; the first's connection, if handed,
// is closed; the session never ends.
func TestClaimSupersedesEarlierClaim(t *testing.T) {
	log := logrus.NewEntry(logrus.New())
	log.Logger.SetLevel(logrus.PanicLevel)
	for _, handed := range []bool{true, false} {
		name := map[bool]string{true: "the earlier claim is handed its link", false: "the earlier claim is aborted"}[handed]
		t.Run(name, func(t *testing.T) {
			r := newResumables(4, time.Minute, log)
			r.clock = newFakeClock() // the takeover wait never ends by itself
			s := buildSession(sessionParams{role: stages.Server, log: log, resume: &resumeParams{}})
			defer s.cancelHard()
			sl := r.register(resumeKey{id: wire.SessionID{1}}, s)
			got := make(chan *link, 1)
			go func() { got <- r.awaitLink(sl, errors.New("backend lost")) }()
			waitFor(t, "the session to wait", 10*time.Second, func() bool { return r.waiting() == 1 })
			offer := wire.ClientResume{ID: wire.SessionID{1}}
			first, claim := r.Claim(context.Background(), wire.UserID{}, offer)
			if first.Status != wire.ResumeOK || claim != sl {
				t.Fatalf("first claim: %v; want the session", first.Status)
			}
			type answer struct {
				reply wire.ServerResume
				claim any
			}
			second := make(chan answer, 1)
			go func() {
				reply, claim := r.Claim(context.Background(), wire.UserID{}, offer)
				second <- answer{reply, claim}
			}()
			waitFor(t, "the second claim to wait", 10*time.Second, func() bool {
				r.mu.Lock()
				defer r.mu.Unlock()
				return sl.superseded
			})
			select {
			case a := <-second:
				t.Fatalf("the second claim did not wait for the first: %v", a.reply.Status)
			default:
			}
			left, peer := net.Pipe()
			defer peer.Close()
			if handed {
				if !r.hand(sl, &link{conn: left}) {
					t.Fatal("the waiting session did not take the first link")
				}
				if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
					t.Fatalf("the superseded connection: read %v; want it closed", err)
				}
			} else {
				r.Abort(&stages.Resumption{Claim: sl})
			}
			a := <-second
			if a.reply.Status != wire.ResumeOK || a.claim != sl {
				t.Fatalf("second claim: %v; want the session", a.reply.Status)
			}
			if s.ending() || r.waiting() != 1 {
				t.Fatalf("session ending %v, waiting %d; want it detached, waiting for the second link", s.ending(), r.waiting())
			}
			lk := &link{}
			if !r.hand(sl, lk) {
				t.Fatal("the waiting session did not take the second link")
			}
			if l := <-got; l != lk || r.Resumed.Load() != 1 {
				t.Fatalf("awaitLink: %v, resumed %d; want the second link, once", l, r.Resumed.Load())
			}
		})
	}
}
