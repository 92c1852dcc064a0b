package stages

import (
	"math"
	"time"
)

// startLadder puts a new episode on the ladder's bottom rung,
// Rate/2^Ladder, with the grid starting at now. Without a ladder the
// episode is paced at Rate.
func (s *shaper) startLadder(now time.Time) {
	s.pace = s.p.Rate
	s.epStart = now
	if s.p.Fall > 0 {
		s.pace = s.timetable(now)
		return
	}
	if s.p.Ladder > 0 {
		s.pace = s.p.Rate / float64(uint(1)<<s.p.Ladder)
		if s.p.Step > 0 {
			s.stepAt = now.Add(s.p.Step)
		}
	}
}

// climb moves the episode up the ladder at the grid points up to now:
// at a grid point where more cells wait than the current rate sends in
// Climb (one Step if unset), the rate doubles (up to Rate) until it would
// send them in Climb. The rate never comes down within an episode, and it changes
// only on the grid, so the observer learns from the rate no more than
// which grid points the rises fell on.
//
// With a Ramp the rate also rises one rung every Ramp from the episode's
// start, whatever waits: a schedule the same for every episode, which
// tells the observer nothing about the page.
func (s *shaper) climb(now time.Time) {
	if s.p.Fall > 0 {
		s.pace = s.timetable(now)
		return
	}
	if s.p.Ladder == 0 || s.pace >= s.p.Rate {
		return
	}
	if s.p.Ramp > 0 {
		s.pace = max(s.pace, s.rampRung(now))
	}
	if s.p.Step == 0 || now.Before(s.stepAt) {
		return
	}
	climb := s.p.Climb
	if climb == 0 {
		climb = s.p.Step
	}
	for s.pace < s.p.Rate && float64(s.queued) > s.pace*climb.Seconds() {
		s.pace = min(2*s.pace, s.p.Rate)
	}
	// The next grid point after now (several may have passed).
	k := now.Sub(s.stepAt)/s.p.Step + 1
	s.stepAt = s.stepAt.Add(k * s.p.Step)
}

// timetable is the paced rate at now of an episode with a Fall: the
// ramp's rung (Rate without a ramp), and from Hold after the episode's
// start Rate halving every Fall, never below Floor, whichever is lower.
// It depends on nothing but the time since the episode began.
func (s *shaper) timetable(now time.Time) float64 {
	e := now.Sub(s.epStart)
	r := s.p.Rate
	if s.p.Ladder > 0 && s.p.Ramp > 0 {
		r = s.rampRung(now)
	}
	if e > s.p.Hold {
		r = min(r, max(s.p.Floor, s.p.Rate*math.Exp2(-float64(e-s.p.Hold)/float64(s.p.Fall))))
	}
	return r
}

// rampRung is the ramp's rate at now: Rate/2^Ladder at the episode's
// start, one rung (a doubling) higher every Ramp, at most Rate.
func (s *shaper) rampRung(now time.Time) float64 {
	k := min(int(now.Sub(s.epStart)/s.p.Ramp), s.p.Ladder)
	return s.p.Rate / float64(uint(1)<<(s.p.Ladder-k))
}
