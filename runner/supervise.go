package runner

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is the client's restart policy for failing sessions, after
// thejerf/suture's supervisor (v4/supervisor.go):
//
//   - Every failed session adds one to a failure count that decays
//     over time: it halves every Decay, so a session that stayed up
//     long is forgiven and a flapping one is not.
//   - Below the threshold the wait grows exponentially with the count:
//     Min·2^(n-1) for a count n (whole part), at most Max. With the
//     defaults: 0.2, 0.4, 0.8, 1.6, 3.2 s.
//   - Past Threshold failures (decayed) the client backs off Long, and
//     the caller logs one error saying so for the whole outage: the flag
//     clears only when the count has decayed below one failure.
//
// Every wait is half fixed, half jittered (full jitter on half of it), so
// it is never zero and many clients do not reconnect in step. Failures that
// retrying cannot fix are not the policy's business: the caller stops on
// those (see permanent) before asking it.
//
// Only the client's reconnect loop calls Next; it is not safe for
// concurrent use.
type Backoff struct {
	// Min is the first wait, Max the longest exponential wait.
	Min, Max time.Duration
	// Decay is the failure count's half-life.
	Decay time.Duration
	// Threshold is the failure count past which the wait is Long.
	Threshold float64
	// Long is the wait once past Threshold.
	Long time.Duration
	// Now and Jitter (a number in [0, 1)) are injected by tests.
	Now    func() time.Time
	Jitter func() float64

	failures float64   // decayed count as of lastFail
	lastFail time.Time // zero before the first failure
	warned   bool      // a long backoff of this outage was reported
}

// Policy numbers of DefaultBackoff.
const (
	backoffMin       = 200 * time.Millisecond
	backoffMax       = 30 * time.Second
	backoffDecay     = 30 * time.Second
	backoffThreshold = 5
	backoffLong      = 60 * time.Second
)

// DefaultBackoff is the client's reconnect policy: waits of 0.2 to 3.2 s
// (jittered down to half) while failures come at most five in about half a
// minute, then 30–60 s, with one error log per outage.
func DefaultBackoff() *Backoff {
	return &Backoff{Min: backoffMin, Max: backoffMax, Decay: backoffDecay, Threshold: backoffThreshold, Long: backoffLong, Now: time.Now, Jitter: rand.Float64}
}

// Delay is the policy's answer to a failure.
type Delay struct {
	// Wait is how long to wait before the next attempt.
	Wait time.Duration
	// Floor is the least time to wait when an app is waiting for a
	// session: Min normally; in a long backoff, the longest exponential
	// step, so that a stream of new app connections cannot turn a long
	// backoff into a reconnect loop.
	Floor time.Duration
	// Failures is the decayed failure count, this failure included.
	Failures float64
	// Long says the count is past Threshold; FirstLong says this is the
	// first long backoff of the outage (the one to log as an error).
	Long, FirstLong bool
}

// Next records a failed session and returns how long to wait.
func (b *Backoff) Next() Delay {
	now := time.Now()
	if b.Now != nil {
		now = b.Now()
	}
	if !b.lastFail.IsZero() && b.Decay > 0 {
		b.failures *= math.Pow(0.5, now.Sub(b.lastFail).Seconds()/b.Decay.Seconds())
	}
	if b.failures < 1 {
		b.warned = false // the previous outage is forgiven
	}
	b.failures++
	b.lastFail = now
	d := Delay{Failures: b.failures, Floor: b.Min}
	if b.Threshold > 0 && b.failures > b.Threshold {
		d.Long = true
		d.FirstLong = !b.warned
		b.warned = true
		d.Wait = b.jitter(b.Long)
		d.Floor = b.step(b.Threshold)
		return d
	}
	d.Wait = b.jitter(b.step(b.failures))
	return d
}

// step is the exponential wait for a failure count.
func (b *Backoff) step(failures float64) time.Duration {
	d := b.Min
	for i := 1; i < int(failures) && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// jitter returns d/2 plus a jittered part of up to d/2.
func (b *Backoff) jitter(d time.Duration) time.Duration {
	j := rand.Float64
	if b.Jitter != nil {
		j = b.Jitter
	}
	return d/2 + time.Duration(j()*float64(d/2))
}
