package stages

import (
	"math"
	"time"
)

// fading is paced for a rate that fades (Fade > 0): every slot at Rate
// carries queued data or a dummy until the episode's cells reach mark,
// the bucket above the cells sent when data last went out, and Idle has
// passed since then; then, with no data waiting, the slots thin out, the rate halving every Fade, and the
// episode ends when it falls below Rate/decayFloor. Data waiting brings
// the rate back to Rate. The observer sees the rate fall only at a
// bucket boundary, and the same fade after every episode.
func (s *shaper) fading(now time.Time, b Batch) Batch {
	if s.phase == phaseIdle && len(s.queue) == 0 {
		return b
	}
	if s.phase == phaseIdle { // pacing ended mid-queue: the queue drains at Rate
		s.phase = phaseOpen
	}
	for range maxSlotsPerWake {
		if now.Before(s.slotNext) {
			break
		}
		at := s.slotNext
		s.climb(at)
		if len(s.queue) > 0 {
			var left int64
			b, left = s.takeQueued(now, b, 1)
			if left == 0 {
				s.fadeAt, s.lastOut = time.Time{}, at
				s.mark = s.bucketUp(s.epCells)
				s.slotNext = nextSlot(at, s.pace, now)
				continue
			}
		}
		r := s.pace
		if s.epCells >= s.mark && at.Sub(s.lastOut) >= s.p.Idle {
			if s.fadeAt.IsZero() {
				s.fadeAt = at
			}
			r = s.pace * math.Exp2(-float64(at.Sub(s.fadeAt))/float64(s.p.Fade))
			if r < s.pace/decayFloor {
				s.why.Idle += s.quiet
				s.quiet = 0
				s.phase = phaseIdle
				return b
			}
		}
		if s.allowed(1) == 0 {
			s.phase = phaseIdle
			return b
		}
		b = s.dummies(now, b, 1)
		s.slotNext = nextSlot(at, r, now)
	}
	return b
}

// nextSlot is the slot after one at at, at rate r; a wake-up that came
// more than 50 ms late restarts the slots from now rather than bursting.
func nextSlot(at time.Time, r float64, now time.Time) time.Time {
	next := at.Add(time.Duration(float64(time.Second) / r))
	if now.Sub(next) > 50*time.Millisecond {
		return now
	}
	return next
}
