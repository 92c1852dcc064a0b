package runner

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"usocks/stages"
	"usocks/wire"
)

// fakeNow is a clock a test moves by hand.
type fakeNow struct{ t time.Time }

func (f *fakeNow) now() time.Time      { return f.t }
func (f *fakeNow) add(d time.Duration) { f.t = f.t.Add(d) }
func newFakeNow() *fakeNow             { return &fakeNow{t: time.Unix(1_000_000, 0)} }
func fullJitter() float64              { return 1 }
func testBackoff(clock *fakeNow) *Backoff {
	b := DefaultBackoff()
	b.Now, b.Jitter = clock.now, fullJitter
	return b
}

// TestBackoffPolicy: failures (with time between them) and what the policy
// answers, on the default numbers with the jitter at its top (so each wait
// is the step itself).
func TestBackoffPolicy(t *testing.T) {
	type step struct {
		after     time.Duration // clock moves this much before the failure
		wait      time.Duration
		floor     time.Duration
		long      bool
		firstLong bool
	}
	ms := time.Millisecond
	quick := func(w time.Duration) step { return step{wait: w, floor: 200 * ms} }
	tests := []struct {
		name  string
		steps []step
	}{
		{"exponential, then long once past the threshold", []step{
			quick(200 * ms), quick(400 * ms), quick(800 * ms), quick(1600 * ms), quick(3200 * ms),
			{wait: time.Minute, floor: 3200 * ms, long: true, firstLong: true},
			{wait: time.Minute, floor: 3200 * ms, long: true},
		}},
		{"failures decay: half after one decay period", []step{
			quick(200 * ms), quick(400 * ms), quick(800 * ms), quick(1600 * ms), // count 4
			{after: 30 * time.Second, wait: 800 * ms, floor: 200 * ms}, // 4/2 + 1 = 3
		}},
		{"a session that stayed up long is forgiven", []step{
			quick(200 * ms), quick(400 * ms), quick(800 * ms),
			{after: 10 * time.Minute, wait: 200 * ms, floor: 200 * ms},
		}},
		{"an outage keeps failing past its long backoff: one first-long only", []step{
			quick(200 * ms), quick(400 * ms), quick(800 * ms), quick(1600 * ms), quick(3200 * ms),
			{wait: time.Minute, floor: 3200 * ms, long: true, firstLong: true}, // count 6
			{after: time.Minute, wait: 400 * ms, floor: 200 * ms},              // 6/4 + 1 = 2.5
			quick(800 * ms), quick(1600 * ms), // 4.5
			{wait: time.Minute, floor: 3200 * ms, long: true}, // 5.5, same outage
		}},
		{"a new outage after recovery is reported again", []step{
			quick(200 * ms), quick(400 * ms), quick(800 * ms), quick(1600 * ms), quick(3200 * ms),
			{wait: time.Minute, floor: 3200 * ms, long: true, firstLong: true},
			{after: 5 * time.Minute, wait: 200 * ms, floor: 200 * ms}, // 6/1024 < 1: forgiven
			quick(400 * ms), quick(800 * ms), quick(1600 * ms), // 4.006
			{wait: time.Minute, floor: 3200 * ms, long: true, firstLong: true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeNow()
			b := testBackoff(clock)
			for i, s := range tc.steps {
				clock.add(s.after)
				d := b.Next()
				if d.Wait != s.wait || d.Floor != s.floor || d.Long != s.long || d.FirstLong != s.firstLong {
					t.Fatalf("failure %d: %+v, want wait %v floor %v long %v first %v", i+1, d, s.wait, s.floor, s.long, s.firstLong)
				}
			}
		})
	}
}

func TestBackoffJitter(t *testing.T) {
	clock := newFakeNow()
	b := testBackoff(clock)
	b.Jitter = func() float64 { return 0 }
	if d := b.Next(); d.Wait != 100*time.Millisecond {
		t.Errorf("no jitter: %v, want half the step (100ms)", d.Wait)
	}
	b.Jitter = func() float64 { return 0.5 }
	if d := b.Next(); d.Wait != 300*time.Millisecond {
		t.Errorf("half jitter: %v, want 3/4 of the step (300ms)", d.Wait)
	}
	b = &Backoff{Min: time.Second, Max: 4 * time.Second} // no clock, no jitter, no threshold: defaults
	for range 5 {
		b.Next()
	}
	if d := b.Next(); d.Wait < 2*time.Second || d.Wait > 4*time.Second || d.Long {
		t.Errorf("capped step: %+v, want 2–4 s and no long backoff", d)
	}
}

// TestClientFailureLogs: the reconnect loop logs one error when the policy
// first backs off long, and one (with the key's fingerprint) after a few
// handshakes in a row without a valid reply; another error in between
// starts the handshake count again.
func TestClientFailureLogs(t *testing.T) {
	logger, hook := test.NewNullLogger()
	key, err := wire.ParseKey(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeNow()
	c := &Client{log: logger.WithField("side", "client"), Backoff: testBackoff(clock)}
	c.live.Store(&clientLive{psk: &key})
	auth := fmt.Errorf("handshake: %w: no reply within 10s", stages.ErrServerAuth)
	other := errors.New("connect to server: connection refused")
	for _, err := range []error{auth, auth, other, auth, auth, auth, auth, auth, auth, nil, auth} {
		c.failed(err)
	}
	var authErrs, longErrs int
	for _, e := range hook.AllEntries() {
		if e.Level != logrus.ErrorLevel {
			continue
		}
		switch {
		case strings.HasPrefix(e.Message, "no valid reply from the server"):
			authErrs++
			if e.Data["key"] != KeyFingerprint(&key) || e.Data["attempts"] != authFailLimit {
				t.Errorf("wrong-key error fields %v, want key %s and attempts %d", e.Data, KeyFingerprint(&key), authFailLimit)
			}
		case strings.HasPrefix(e.Message, "sessions keep failing"):
			longErrs++
		default:
			t.Errorf("unexpected error log %q", e.Message)
		}
	}
	// auth ×2, other (count restarts), auth ×6: the third of those six
	// logs; nil restarts it again and one more auth stays quiet.
	if authErrs != 1 {
		t.Errorf("%d wrong-key errors, want 1", authErrs)
	}
	// Eleven quick failures: past the threshold at the sixth, logged once.
	if longErrs != 1 {
		t.Errorf("%d long-backoff errors, want 1", longErrs)
	}
}
