package stages

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

// Defence is the traffic-analysis defence stage of protocol v2 (SPEC-v2.md
// §7a): mux → defence → encrypt. It decides what the observer sees of this
// side's sending direction — record sizes (cells), dummy records, pacing —
// from the policy both sides agreed in the handshake and from events on the
// data path: batches to send, and what the decrypt stage reports received.
// With policy off the stage is not in the pipeline at all.
type Defence struct {
	Params *DefenceParams
	In     <-chan Batch
	Out    chan<- Batch
	// Events, if set, tells the stage what arrived (tie and episodes that
	// the peer's data opens).
	Events *DefenceEvents
	Rand   *rand.Rand
	// Stats, if set, counts the wire bytes of data and of dummies.
	Stats *Stats
	// Log, if set, gets the session's totals when the stage ends.
	Log *logrus.Entry
	// MarkPieces marks the pieces of a data frame split into cells with
	// FlagMORE (all but the last), so that the receiver joins them into
	// the one numbered frame they were (resumable sessions, SPEC-v2.md
	// §7b).
	MarkPieces bool
	// Carry, if set, is the session's defence state, taken when the
	// stage starts and given back when it ends, so that an episode goes
	// on across a new link (DefenceCarry).
	Carry *DefenceCarry
}

// DefenceEvents carries what the receive side saw to the defence stage:
// decrypt adds, the defence stage reads. Safe for one writer and one
// reader.
type DefenceEvents struct {
	bytes   atomic.Int64 // wire bytes read
	data    atomic.Int64 // data frames opened
	dataLen atomic.Int64 // their payload bytes
	wake    chan struct{}
}

// NewDefenceEvents returns an empty event channel.
func NewDefenceEvents() *DefenceEvents { return &DefenceEvents{wake: make(chan struct{}, 1)} }

// Read is told the size of every chunk read from the backend.
func (e *DefenceEvents) Read(n int) { e.bytes.Add(int64(n)) }

// Frame is told the type and payload length of every frame opened.
func (e *DefenceEvents) Frame(t wire.FrameType, n int) {
	if isData(t) {
		e.data.Add(1)
		e.dataLen.Add(int64(n))
	}
}

// Notify wakes the defence stage; it never blocks.
func (e *DefenceEvents) Notify() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run shapes until In is closed (then it flushes and closes Out) or ctx is
// done. Cut by ctx it releases none of the frames it holds (they go to the
// garbage collector): a piece of a split frame already sent aliases the
// buffer of its last piece.
func (d *Defence) Run(ctx context.Context) (err error) {
	defer close(d.Out)
	s := d.Carry.take(d.Params, d.Rand)
	defer d.Carry.put(s) // last: after the frames held are dropped
	s.markPieces = d.MarkPieces
	defer func() {
		if d.Log != nil {
			over := 0.0
			if s.realBytes > 0 {
				over = 100 * float64(s.dummy) / float64(s.realBytes)
			}
			d.Log.WithFields(logrus.Fields{"data_bytes": s.realBytes, "dummy_bytes": s.dummy,
				"dummy_pct": fmt.Sprintf("%.1f", over), "dummy_cells_gap": s.why.Gap + s.quiet,
				"dummy_cells_idle": s.why.Idle, "dummy_cells_tail": s.why.Tail, "dummy_cells_other": s.why.Other, "dummy_cells_denied": s.why.Denied}).Info("defence totals for what this side sent")
		}
	}()
	var wake <-chan struct{}
	if d.Events != nil {
		wake = d.Events.wake
	}
	// The batches sent cycle through a ring, as the mux's do: a slot is
	// reused only after encrypt has taken the batches sent after it.
	var ring [batchRing]Batch
	next := 0
	fresh := func() Batch { return ring[next][:0] }
	// The session's last frame (CLOSE or RESET) is the last record sent
	// (SPEC-v2.md §7): nothing, not even a dummy, goes out after it.
	ended := false
	send := func(b Batch) error {
		if i := finalIndex(b); i >= 0 {
			for j := i + 1; j < len(b); j++ {
				b[j].Release()
			}
			b, ended = b[:i+1], true
		}
		ring[next] = b // keep a grown array
		next = (next + 1) % batchRing
		if d.Stats != nil {
			d.Stats.DefenceData.Store(s.realBytes)
			d.Stats.DefenceDummy.Store(s.dummy)
		}
		select {
		case d.Out <- b:
			return nil
		case <-ctx.Done():
			// Not released: see the deferred drop below.
			clear(b)
			return ctx.Err()
		}
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer func() {
		if err != nil {
			// Cut: encrypt may still be sealing pieces of a split frame
			// sent before, which alias the buffer its last piece (queued
			// here, or in the batch send gave up on) owns. The frames go
			// to the garbage collector, never back to the pool where
			// another stream could reuse a buffer under the seal.
			clear(s.queue)
			s.queue = s.queue[:0]
			return
		}
		for i := range s.queue {
			s.queue[i].Release()
		}
	}()
	for !ended {
		if b := s.due(time.Now(), fresh()); len(b) > 0 {
			if err := send(b); err != nil || ended {
				return err
			}
		}
		var tick <-chan time.Time
		if dl := s.deadline(time.Now()); !dl.IsZero() {
			timer.Reset(time.Until(dl))
			tick = timer.C
		}
		in := d.In
		if s.queued >= maxQueueCells {
			in = nil
		}
		select {
		case b, ok := <-in:
			now := time.Now()
			if !ok {
				if out := s.flush(now); len(out) > 0 {
					return send(append(fresh(), out...))
				}
				return nil
			}
			if out := s.admit(now, b); len(out) > 0 {
				if err := send(append(fresh(), out...)); err != nil || ended {
					return err
				}
			}
			// The sender reuses b's array: a stale copy there would keep
			// the payload buffers reachable after they are freed.
			clear(b)
		case <-wake:
			s.received(time.Now(), d.Events.bytes.Load(), d.Events.data.Load(), d.Events.dataLen.Load())
		case <-tick:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// finalIndex is the index of the session's last frame (CLOSE or RESET)
// in b, or -1.
func finalIndex(b Batch) int {
	for i := range b {
		if t := b[i].Type; t == wire.FrameClose || t == wire.FrameReset {
			return i
		}
	}
	return -1
}

// due appends to b what must go out at now: paced cells, FRONT, fill,
// tail and tie dummies.
func (s *shaper) due(now time.Time, b Batch) Batch {
	if s.p.Fade > 0 && s.pacing() {
		return s.fading(now, b)
	}
	if s.phase == phaseOpen && len(s.queue) == 0 && now.Sub(s.lastData) >= s.p.Idle {
		s.endOpen(now)
	}
	if s.p.Decay > 0 && s.pacing() {
		return s.surging(now, b)
	}
	if s.pacing() {
		return s.paced(now, b)
	}
	if s.bulk {
		b = append(b, s.flush(now)...) // what pacing held back when the episode became bulk
		s.front = s.front[:0]
		if s.phase == phaseTail {
			s.phase = phaseIdle
		}
		return b
	}
	var want int64
	for len(s.front) > 0 && !s.front[0].After(now) {
		s.front = s.front[1:]
		want++
	}
	if s.phase == phaseOpen && s.p.FillRate > 0 && !now.Before(s.nextFill) {
		want++
	}
	if s.phase == phaseTail {
		want += s.tailDue(now)
	}
	if s.tieOwed >= 1 {
		want += int64(s.tieOwed)
	}
	want = s.allowed(want)
	if want == 0 && s.phase == phaseTail && s.budget() == 0 {
		s.phase = phaseIdle // out of budget: the bucket stays unfilled
	}
	return s.dummies(now, b, want)
}

// endOpen closes the open phase: to the tail when the bucket needs
// filling, else the episode ends.
func (s *shaper) endOpen(now time.Time) {
	s.why.Idle += s.quiet
	s.quiet = 0
	s.front = s.front[:0]
	s.phase = phaseIdle
	if s.p.Bucket > 1 && !s.bulk {
		if s.target = s.bucketUp(s.epCells); s.target > s.epCells {
			s.phase, s.tailNext = phaseTail, now
		}
	}
}

// tailDue is how many tail cells are due at now.
func (s *shaper) tailDue(now time.Time) int64 {
	if now.Before(s.tailNext) {
		return 0
	}
	per := float64(time.Second) / s.p.TailRate
	k := 1 + int64(float64(now.Sub(s.tailNext))/per)
	k = min(k, s.target-s.epCells, maxSlotsPerWake)
	s.tailNext = s.tailNext.Add(time.Duration(float64(k) * per))
	if now.Sub(s.tailNext) > 50*time.Millisecond {
		s.tailNext = now // a late wake-up does not turn into a burst
	}
	return max(k, 0)
}

// paced fills the slots due at now with queued cells, and with dummies
// while an episode is on.
func (s *shaper) paced(now time.Time, b Batch) Batch {
	if now.Before(s.slotNext) || (s.phase == phaseIdle && len(s.queue) == 0) {
		return b
	}
	s.climb(now)
	b, slots := s.takeQueued(now, b, s.dueSlots(now, s.pace))
	if s.phase == phaseIdle {
		return b
	}
	if s.phase == phaseTail {
		slots = min(slots, s.target-s.epCells)
	}
	return s.dummies(now, b, s.allowed(slots))
}

// surging is paced for a decaying rate: a surge sends every slot, data or
// dummy; data that piles up starts a new surge; once a surge is over and
// nothing waits, data goes out as it comes.
func (s *shaper) surging(now time.Time, b Batch) Batch {
	r := s.rate(now)
	if len(s.queue) > 0 && (r == 0 || float64(s.queued) > r*s.p.Surge.Seconds()) {
		s.surgeAt, r = now, s.p.Rate
		if s.slotNext.Before(now) {
			s.slotNext = now
		}
	}
	if r == 0 || now.Before(s.slotNext) {
		return b
	}
	b, slots := s.takeQueued(now, b, s.dueSlots(now, r))
	if s.phase == phaseIdle {
		return b
	}
	return s.dummies(now, b, s.allowed(slots))
}

// dueSlots is how many sending slots at rate cells/s have come up to now
// (at most maxSlotsPerWake); it moves the next slot past them, and
// forgets a backlog of more than 50 ms rather than catching up on it.
func (s *shaper) dueSlots(now time.Time, rate float64) int64 {
	per := float64(time.Second) / rate
	slots := min(1+int64(float64(now.Sub(s.slotNext))/per), maxSlotsPerWake)
	s.slotNext = s.slotNext.Add(time.Duration(float64(slots) * per))
	if now.Sub(s.slotNext) > 50*time.Millisecond {
		s.slotNext = now
	}
	return slots
}

// takeQueued moves queued cells into b for up to slots slots and returns
// the slots left.
func (s *shaper) takeQueued(now time.Time, b Batch, slots int64) (Batch, int64) {
	var data int64
	for len(s.queue) > 0 {
		f, c := s.queue[0], s.qcells[0]
		if c > 0 && (slots == 0 || (c > slots && data > 0)) {
			break // a multi-cell frame waits for a wake-up with room
		}
		// A frame of 0 cells rides in the one taken before it.
		s.queue[0] = Frame{}
		s.queue, s.qcells = s.queue[1:], s.qcells[1:]
		s.queued -= int(c)
		b = append(b, f)
		data += c
		slots -= min(c, slots)
	}
	s.sent(now, data, false)
	return b, slots
}

// dummies appends n dummy cells to b as PAD records of up to
// maxDummyCells cells each, and ends a tail whose bucket is full.
func (s *shaper) dummies(now time.Time, b Batch, n int64) Batch {
	if n > 0 {
		s.sent(now, n, true)
	}
	for n > 0 {
		k := min(n, maxDummyCells)
		n -= k
		pad := int(k)*s.p.Cell - wire.RecordOverhead - wire.FrameHeaderLen
		b = append(b, Frame{Frame: wire.Frame{Type: wire.FramePad}, padLen: pad})
	}
	if s.phase == phaseTail && s.epCells >= s.target {
		s.phase = phaseIdle
	}
	return b
}

// deadline is when the shaper next needs a wake-up without input; zero
// when nothing is pending.
func (s *shaper) deadline(now time.Time) time.Time {
	var dl time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (dl.IsZero() || t.Before(dl)) {
			dl = t
		}
	}
	fade := s.p.Fade > 0 && s.pacing()
	if s.phase == phaseOpen && len(s.queue) == 0 && !fade { // a fade ends in its slots
		earliest(s.lastData.Add(s.p.Idle))
	}
	if s.pacing() {
		surgeOver := s.p.Decay > 0 && len(s.queue) == 0 && s.rate(now) == 0
		if (s.phase != phaseIdle || len(s.queue) > 0) && !surgeOver {
			earliest(s.slotNext)
		}
		if s.phase != phaseIdle && len(s.queue) > 0 && s.pace < s.p.Rate {
			earliest(s.stepAt)
		}
		return dl
	}
	if s.bulk {
		return dl
	}
	if len(s.front) > 0 {
		earliest(s.front[0])
	}
	if s.phase == phaseOpen && s.p.FillRate > 0 {
		earliest(s.nextFill)
	}
	if s.phase == phaseTail {
		earliest(s.tailNext)
	}
	return dl
}
