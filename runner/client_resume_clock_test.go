package runner

import (
	"context"
	"io"
	"testing"
	"time"
)

// TestClientResumeWindowExpires: a client whose server stays unreachable
// after a cut retries its resumption for exactly its resume_timeout, on
// its own clock (a fake one here: no waiting), then gives up: the
// session's streams are reset and the next session carries new ones.
func TestClientResumeWindowExpires(t *testing.T) {
	const window = 20 * time.Second
	fc := newFakeClock()
	tn := resumeTunnel(t, "plain_tcp", func(o *tunnelOpts) { o.resume, o.srvResume, o.cliClock = window, time.Minute, fc })
	c := echoThenCut(t, tn)
	// Each attempt makes the dial's timer, and a failed one the backoff's.
	retried := func(made int) func() bool {
		return func() bool { return fc.timersMade() == made && fc.armed() == 1 }
	}
	waitFor(t, "the first resumption to fail", 10*time.Second, retried(2))
	// The client keeps trying for the whole window, not a moment less…
	fc.Advance(window - time.Nanosecond)
	waitFor(t, "the second resumption to fail", 10*time.Second, retried(4))
	if n := tn.cli.resumeExpired.Load(); n != 0 {
		t.Fatalf("the client gave up %d times before resume_timeout", n)
	}
	// …and gives up then.
	fc.Advance(time.Nanosecond)
	waitFor(t, "the client to give up", 10*time.Second, func() bool { return tn.cli.resumeExpired.Load() == 1 })
	if n := tn.cli.Resumes.Load(); n != 0 {
		t.Fatalf("%d resumptions, want none", n)
	}
	if n, err := io.Copy(io.Discard, c); err == nil || n != 0 {
		t.Fatalf("stream of a session given up: read %d bytes, err %v; want a reset", n, err)
	}
	tn.relay.down.Store(false)
	tn.waitSession()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 100_000, 6); err != nil {
		t.Fatal(err)
	}
}
