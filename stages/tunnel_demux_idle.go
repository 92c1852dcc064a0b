package stages

import (
	"time"

	"github.com/sirupsen/logrus"
)

// Idle streams: the demux's janitor resets streams without data for
// IdleTimeout (HalfClosedTimeout once one side finished).

// janitorPeriod checks a few times per shortest timeout.
func janitorPeriod(ts ...time.Duration) time.Duration {
	p := time.Minute
	for _, t := range ts {
		if t > 0 {
			p = min(p, t/4)
		}
	}
	return max(p, 10*time.Millisecond)
}

// reapIdle resets streams that have been idle too long.
func (d *Demux) reapIdle(now time.Time) {
	for _, s := range d.streams {
		idle := now.Sub(time.Unix(0, s.active.Load()))
		st := s.currentState()
		half := st == stateLocalFIN || st == stateRemoteFIN
		if (d.IdleTimeout > 0 && idle > d.IdleTimeout) || (half && d.HalfClosedTimeout > 0 && idle > d.HalfClosedTimeout) {
			d.Log.WithFields(logrus.Fields{"stream": s.id, "idle": idle.Round(time.Second).String(), "half_closed": half}).Debug("resetting idle stream")
			s.abort(true)
		}
	}
}
