package runner

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// TestAppDoesNotHangWithoutServer: while the server is unreachable, an app
// connection is reset after session_wait instead of being held forever.
func TestAppDoesNotHangWithoutServer(t *testing.T) {
	const wait = 300 * time.Millisecond
	tn := startTunnel(t, tunnelOpts{targetPort: 1, relay: true, relayDown: true, sessionWait: wait})
	start := time.Now()
	c := tn.dial(modeEcho)
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(wait + 5*time.Second))
	_, err := io.ReadAll(c)
	took := time.Since(start)
	t.Logf("app connection ended after %v (%v)", took.Round(time.Millisecond), err)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the app connection was still held %v after session_wait (%v)", took, wait)
	}
	if took < wait {
		t.Fatalf("ended after %v, before session_wait (%v)", took, wait)
	}
}

// TestWaitingAppCutsBackoffShort: the client is in a long reconnect
// backoff (30 s) when the server comes back; an app that connects then
// makes it reconnect at once and gets its stream, instead of waiting out
// the backoff.
func TestWaitingAppCutsBackoffShort(t *testing.T) {
	tg := startTarget(t)
	// Twelve failures so far, past the threshold: the next wait is Long/2
	// = 30 s (no jitter).
	b := &Backoff{Min: 20 * time.Millisecond, Max: time.Minute, Decay: time.Hour, Threshold: 5, Long: time.Minute, Jitter: func() float64 { return 0 }, failures: 12}
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true, relayDown: true, backoff: b, sessionWait: 20 * time.Second})
	waitFor(t, "a failed attempt and its backoff", 10*time.Second, func() bool {
		for _, e := range tn.hook.AllEntries() {
			if e.Message == "session ended, reconnecting" && e.Data["retry_in"] == "30s" {
				return true
			}
		}
		return false
	})
	tn.relay.down.Store(false) // the server is back
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 10_000, 7); err != nil {
		t.Fatalf("app stream after the server came back: %v (the client sat out its 30 s backoff)", err)
	}
	t.Logf("app stream served %v after the server came back, with 30 s of backoff left", time.Since(start).Round(time.Millisecond))
}
