package runner

import "time"

// clock makes the timers of server-side resumption (resume_timeout, the
// claim grace, the takeover wait), so that tests can drive them with a
// fake clock instead of waiting.
type clock interface {
	NewTimer(d time.Duration) clockTimer
}

// clockTimer is the part of *time.Timer that resumption uses.
type clockTimer interface {
	Chan() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// realClock is the system clock.
type realClock struct{}

func (realClock) NewTimer(d time.Duration) clockTimer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ *time.Timer }

func (t realTimer) Chan() <-chan time.Time { return t.C }
