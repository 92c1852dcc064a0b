package stages

import (
	"math/rand/v2"
	"sync"
	"time"
)

// DefenceCarry keeps one side's defence state from one link of a session
// to the next (a resumable session runs on one backend connection at a
// time; SPEC-v2.md §7a): the episode under way, whether it is bulk, the
// paced rate, the budget and the totals. Without it every new link, after
// a rotation or a resumption, began a new episode, from the ramp's lowest
// rung and, for the client, at the upload's paced rate: with rotate_bytes
// of some tens of KB every link paid the start of an episode, and a bulk
// upload never left the 2.3 Mbit/s pace.
//
// The time between two links does not count: the shaper's clock stands
// still from the end of one link's stage to the start of the next one's
// (the application did not pause, the tunnel did), so a resumption that
// takes longer than the idle time does not end the episode either.
//
// What belonged to the old link is not carried: frames it held (the
// resend buffer sends them again) and the counters of the old link's
// DefenceEvents. A link whose stage finds the state taken (links do not
// overlap, but nothing here relies on it) or made for other parameters
// starts afresh.
type DefenceCarry struct {
	mu    sync.Mutex
	s     *shaper
	putAt time.Time
}

// take returns the carried state for a link shaping with p, or a new one.
// A nil carry always gives a new one.
func (c *DefenceCarry) take(p *DefenceParams, rng *rand.Rand) *shaper {
	if c != nil {
		c.mu.Lock()
		s, at := c.s, c.putAt
		c.s = nil
		c.mu.Unlock()
		if s != nil && *s.p == *p {
			s.shift(time.Since(at))
			return s
		}
	}
	return newShaper(p, rng)
}

// put keeps s for the next link, without what belonged to this one.
func (c *DefenceCarry) put(s *shaper) {
	if c == nil {
		return
	}
	clear(s.queue)
	s.queue, s.qcells, s.queued = s.queue[:0], s.qcells[:0], 0
	s.seenBytes, s.seenD, s.seenLen = 0, 0, 0
	c.mu.Lock()
	c.s, c.putAt = s, time.Now()
	c.mu.Unlock()
}

// shift moves every instant the shaper keeps d later: its clock stood
// still for d.
func (s *shaper) shift(d time.Duration) {
	if d <= 0 {
		return
	}
	for _, t := range []*time.Time{&s.lastData, &s.lastSend, &s.tailNext, &s.nextFill,
		&s.slotNext, &s.surgeAt, &s.fadeAt, &s.lastOut, &s.stepAt, &s.epStart} {
		if !t.IsZero() {
			*t = t.Add(d)
		}
	}
	for i := range s.front {
		s.front[i] = s.front[i].Add(d)
	}
}
