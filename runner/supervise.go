package runner

import (
	"math/rand/v2"
	"time"
)

// Backoff is the restart policy for a failing session, after
// thejerf/suture's: each failure doubles the wait up to Max, with full
// jitter so that many clients do not reconnect in step; a session that
// stayed up for Healthy counts as a success and resets the count.
type Backoff struct {
	Min, Max time.Duration
	// Healthy is how long a session must last to reset the backoff.
	Healthy time.Duration
	// Jitter returns a number in [0, 1); tests inject a fixed one.
	Jitter func() float64

	failures int
}

// DefaultBackoff is the client's reconnect policy.
func DefaultBackoff() *Backoff {
	return &Backoff{Min: 200 * time.Millisecond, Max: 30 * time.Second, Healthy: 30 * time.Second, Jitter: rand.Float64}
}

// Next records a session that lasted `lasted` and failed, and returns how
// long to wait before the next attempt.
func (b *Backoff) Next(lasted time.Duration) time.Duration {
	if lasted >= b.Healthy {
		b.failures = 0
	}
	d := b.Min
	for i := 0; i < b.failures && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	b.failures++
	// Half fixed, half jittered: never zero, never in step.
	return d/2 + time.Duration(b.Jitter()*float64(d/2))
}
