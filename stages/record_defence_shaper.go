package stages

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"usocks/wire"
)

// shaper is the defence stage's state machine, without goroutines or
// clocks: the stage feeds it events with their time and sends what it
// returns. SPEC-v2.md §7a describes the same machine.
//
// Phases of the sending direction:
//
//	idle ──data sent or received──► open ──Idle without data──► tail ──bucket full──► idle
//	                                  ▲                           │
//	                                  └────────data───────────────┘
//
// An episode runs from idle back to idle. In open the shaper adds FRONT
// dummies (scheduled when the episode starts) and fill dummies in gaps; in
// tail it sends dummies until the episode's cells reach the bucket. With a
// Rate it also paces every cell, data or dummy, in open and tail. Tie
// dummies follow received cells in any phase. Dummies stop when the budget
// is spent; an episode that grows past MaxEpisode becomes bulk and gets no
// dummies and no pacing until it ends, and so does one that has received
// MaxEpisodeIn bytes of data (the peer's bulk transfer).
type shaper struct {
	markPieces bool // FlagMORE on split pieces (Defence.MarkPieces)
	p          *DefenceParams
	rng        *rand.Rand
	cellBody   int // the most payload a one-cell STREAM record carries

	phase    phase
	lastData time.Time // last data frame sent or received
	lastSend time.Time
	epCells  int64 // cells sent in this episode, data and dummies
	epReal   int64 // payload bytes sent in this episode
	bulk     bool
	target   int64       // tail: the episode's padded size in cells
	tailNext time.Time   // tail: when the next tail cell is due
	nextFill time.Time   // open: when a fill dummy is due if nothing else went
	front    []time.Time // FRONT dummies still to send, in order

	tieOwed                   float64 // cells owed to the peer's download
	seenBytes, seenD, seenLen int64   // receive counters already accounted
	epIn                      int64   // data payload bytes received in this episode

	// Pacing (Rate > 0).
	queue     []Frame // frames waiting for their slot, whole cells each (or riding in the one before: qcells)
	qcells    []int64 // cells of each queued frame; 0: it fills the previous frame's padding
	queued    int     // cells in queue
	slotNext  time.Time
	surgeAt   time.Time // Decay: when the current surge started
	mark      int64     // Fade: the bucket the episode fills at full rate
	fadeAt    time.Time // Fade: when the rate began to fade; zero: full rate
	lastOut   time.Time // Fade: the slot that last carried data
	pace      float64   // the paced rate now: Rate, or the ladder's rung
	stepAt    time.Time // Ladder: the next point of the grid
	epStart   time.Time // when the episode began (Ramp, Fall)
	realBytes int64     // session totals on the wire, for the stats
	dummy     int64
	allow     int64 // Budget: dummy bytes that may still go out
	// Dummy cells by cause: in gaps between data of an open episode, in
	// the idle window after its last data, in the tail (bucket), and any
	// other (tie, FRONT outside an episode). quiet counts the open
	// phase's dummies since the last data, not yet attributed.
	why   dummyCauses
	quiet int64
}

// dummyCauses splits dummy cells by why they were sent; Denied counts
// those the budget held back.
type dummyCauses struct{ Gap, Idle, Tail, Other, Denied int64 }

type phase uint8

const (
	phaseIdle phase = iota
	phaseOpen
	phaseTail
)

// maxDummyCells bounds one dummy record, so its body stays in the pooled
// buffer class on the receiver.
const maxDummyCells = 12

// maxQueueCells bounds what pacing holds back; past it the stage stops
// taking batches and back-pressure reaches the streams.
const maxQueueCells = 512

// maxSlotsPerWake bounds the cells one late wake-up sends at once.
const maxSlotsPerWake = 64

func newShaper(p *DefenceParams, rng *rand.Rand) *shaper {
	s := &shaper{p: p, rng: rng, allow: p.BudgetFree, pace: p.Rate}
	if p.Cell > 0 {
		s.cellBody = p.Cell - wire.RecordOverhead - wire.FrameHeaderLen
	}
	return s
}

// isData says whether a frame is application activity: it opens or keeps
// open an episode. Keepalives, session control and dummies are not.
func isData(t wire.FrameType) bool {
	return t == wire.FrameStream || t == wire.FrameDatagram || t == wire.FrameWindow
}

// recordLen is the sealed size of a frame.
func recordLen(f *Frame) int {
	return wire.RecordOverhead + wire.FrameHeaderLen + len(f.Payload) + f.padLen
}

// cellsOf is how many cells n sealed bytes take once aligned.
func (s *shaper) cellsOf(n int) int64 {
	if s.p.Cell == 0 {
		return 0
	}
	return int64((n + s.p.Cell - 1) / s.p.Cell)
}

func (s *shaper) pacing() bool { return s.p.Rate > 0 && !s.bulk }

// touch records data activity at now: it opens an episode if none is.
func (s *shaper) touch(now time.Time) {
	s.lastData = now
	s.why.Gap += s.quiet
	s.quiet = 0
	switch s.phase {
	case phaseIdle:
		s.phase = phaseOpen
		s.epCells, s.epReal, s.epIn, s.bulk = 0, 0, 0, false
		s.scheduleFront(now)
		s.nextFill = now.Add(s.fillGap())
		if s.p.Rate > 0 && s.slotNext.Before(now) {
			s.slotNext = now
		}
		s.surgeAt = now
		s.startLadder(now)
		s.mark, s.fadeAt, s.lastOut = s.bucketUp(0), time.Time{}, now
	case phaseTail:
		s.phase = phaseOpen
	}
}

// scheduleFront draws the episode's FRONT dummies: N ~ U[0, Front] at
// Rayleigh times with scale w/3, w ~ U[FrontWindow/2, FrontWindow].
func (s *shaper) scheduleFront(now time.Time) {
	s.front = s.front[:0]
	if s.p.Front == 0 {
		return
	}
	n := s.rng.IntN(s.p.Front + 1)
	w := float64(s.p.FrontWindow) * (0.5 + 0.5*s.rng.Float64())
	for range n {
		u := 1 - s.rng.Float64() // (0, 1]
		t := time.Duration(w / 3 * math.Sqrt(-2*math.Log(u)))
		s.front = append(s.front, now.Add(min(t, time.Duration(w))))
	}
	slices.SortFunc(s.front, func(a, b time.Time) int { return a.Compare(b) })
}

// decayFloor: a surge whose rate fell below Rate/decayFloor is over.
const decayFloor = 16

// rate is the paced rate at now (cells/s); 0 once a surge is over.
func (s *shaper) rate(now time.Time) float64 {
	if s.p.Decay == 0 {
		return s.p.Rate
	}
	r := s.p.Rate * math.Exp2(-float64(now.Sub(s.surgeAt))/float64(s.p.Decay))
	if r < s.p.Rate/decayFloor {
		return 0
	}
	return r
}

// fillGap is the wait before a fill dummy: 1/FillRate, jittered ±50 %.
func (s *shaper) fillGap() time.Duration {
	if s.p.FillRate == 0 {
		return 0
	}
	return time.Duration(float64(time.Second) / s.p.FillRate * (0.5 + s.rng.Float64()))
}

// admit takes a batch from the mux at now. Without pacing it returns the
// batch to send now; with pacing the frames are queued (split into cells)
// and it returns nil.
func (s *shaper) admit(now time.Time, b Batch) Batch {
	data := false
	payload := 0
	for i := range b {
		if isData(b[i].Type) {
			data = true
			payload += len(b[i].Payload)
		}
	}
	if data {
		s.touch(now)
		s.epReal += int64(payload)
		if s.p.MaxEpisode > 0 && s.epReal > s.p.MaxEpisode && !s.bulk {
			s.bulk = true
			s.front = s.front[:0]
		}
	}
	if s.pacing() && s.phase != phaseIdle {
		for _, f := range b {
			s.enqueue(f)
		}
		if !s.fadeAt.IsZero() && s.slotNext.After(now) {
			s.slotNext = now // data brings a faded rate back at once
		}
		return nil
	}
	n := 0
	for i := range b {
		n += recordLen(&b[i])
	}
	if len(s.queue) > 0 { // pacing just ended (bulk): the queue goes first
		b = append(s.flush(now), b...)
	}
	s.sent(now, s.cellsOf(n), false)
	return b
}

// enqueue splits a STREAM data frame into one-cell pieces (the last piece keeps
// the buffer and the FIN/RST flags) and queues them; any other frame is
// queued whole, padded to whole cells.
func (s *shaper) enqueue(f Frame) {
	// Only data is split: a SYN's payload without DAT (a target) is one
	// field and goes whole. Data that does not fit whole in the padding
	// of the cell queued last starts there: its first piece fills it.
	first := s.cellBody
	if k := len(s.queue) - 1; k >= 0 {
		if room := s.queue[k].padLen - wire.RecordOverhead - wire.FrameHeaderLen; room >= minPiece {
			first = room
		}
	}
	splitData(f, first, s.cellBody, s.markPieces, s.push)
}

// minPiece is the least data a piece filling the padding of a cell
// carries: a smaller remainder stays padding.
const minPiece = 64

// splitData hands f to emit, a STREAM data frame with a payload longer
// than head (then size) bytes in pieces: the first of at most head
// bytes, the others of at most size. The first keeps SYN, the last keeps
// the buffer and the FIN/RST flags (the others alias its payload); with
// more, all but the last carry FlagMORE. Any other frame goes whole.
func splitData(f Frame, head, size int, more bool, emit func(Frame)) {
	if head <= 0 || size <= 0 || f.Type != wire.FrameStream || !f.Flags.Has(wire.FlagDAT) || len(f.Payload) <= head {
		emit(f)
		return
	}
	p, buf := f.Payload, f.buf
	first := true
	for len(p) > 0 {
		piece := f
		n := min(len(p), size)
		if first {
			n = min(len(p), head)
		}
		piece.Payload, p = p[:n], p[n:]
		piece.buf = nil
		if !first {
			piece.Flags &^= wire.FlagSYN
		}
		if len(p) > 0 {
			piece.Flags &^= wire.FlagFIN | wire.FlagRST
			if more {
				piece.Flags |= wire.FlagMORE
			}
		} else {
			piece.buf = buf
		}
		first = false
		emit(piece)
	}
}

// push queues a frame padded to whole cells. A frame that fits in the
// padding of the frame queued before it rides in that frame's last cell
// instead, and takes over what is left of the padding: a FIN, a SYN and
// a stream's first data, queued together, go in one slot rather than
// three. The observer sees the same cells.
func (s *shaper) push(f Frame) {
	n := recordLen(&f)
	if k := len(s.queue) - 1; k >= 0 && s.queue[k].padLen >= n {
		f.padLen += s.queue[k].padLen - n
		s.queue[k].padLen = 0
		s.queue = append(s.queue, f)
		s.qcells = append(s.qcells, 0)
		return
	}
	cells := s.cellsOf(n)
	f.padLen += int(cells)*s.p.Cell - n
	s.queue = append(s.queue, f)
	s.qcells = append(s.qcells, cells)
	s.queued += int(cells)
}

// flush hands out everything queued at once (session end, bulk).
func (s *shaper) flush(now time.Time) Batch {
	if len(s.queue) == 0 {
		return nil
	}
	b := slices.Clone(s.queue)
	s.sent(now, int64(s.queued), false)
	clear(s.queue)
	s.queue, s.qcells, s.queued = s.queue[:0], s.qcells[:0], 0
	return b
}

// received accounts for what the receive side saw: wire bytes read, data
// frames opened and their payload bytes, as running totals.
func (s *shaper) received(now time.Time, bytes, data, dataLen int64) {
	if data > s.seenD {
		s.touch(now)
	}
	if s.phase != phaseIdle {
		s.epIn += dataLen - s.seenLen
		if s.p.MaxEpisodeIn > 0 && s.epIn > s.p.MaxEpisodeIn && !s.bulk {
			s.bulk = true // the peer's bulk transfer: this side stops shaping too
			s.front = s.front[:0]
		}
	}
	s.seenLen = dataLen
	if s.p.Tie > 0 && s.p.Cell > 0 && !s.bulk {
		s.tieOwed += float64(bytes-s.seenBytes) / float64(s.p.Cell) / float64(s.p.Tie)
	}
	s.seenBytes, s.seenD = bytes, data
}

// sent accounts cells that went out.
func (s *shaper) sent(now time.Time, cells int64, dummy bool) {
	if cells == 0 {
		return
	}
	s.lastSend = now
	s.nextFill = now.Add(s.fillGap())
	if s.phase != phaseIdle {
		s.epCells += cells
	}
	s.tieOwed = max(s.tieOwed-float64(cells), -4)
	if dummy {
		s.dummy += cells * int64(s.p.Cell)
		s.allow -= cells * int64(s.p.Cell)
		switch s.phase {
		case phaseOpen:
			s.quiet += cells
		case phaseTail:
			s.why.Tail += cells
		default:
			s.why.Other += cells
		}
	} else {
		s.realBytes += cells * int64(s.p.Cell)
		if s.allow < s.p.BudgetFree {
			s.allow = min(s.p.BudgetFree, s.allow+int64(s.p.Budget*float64(cells*int64(s.p.Cell))))
		}
	}
}

// budget is how many dummy cells may still go out: a token bucket that
// holds at most BudgetFree bytes, starts full and gains Budget bytes per
// data byte sent, so that over any stretch of the session dummies stay
// within Budget × data + BudgetFree.
func (s *shaper) budget() int64 {
	if s.p.Budget == 0 {
		return math.MaxInt64
	}
	return max(s.allow/int64(s.p.Cell), 0)
}

// allowed is min(n, budget()); it counts the cells the budget holds back.
func (s *shaper) allowed(n int64) int64 {
	k := min(n, s.budget())
	s.why.Denied += n - k
	return k
}

// bucketUp is the padded size of an episode of n cells.
func (s *shaper) bucketUp(n int64) int64 {
	t := max(int64(s.p.MinCells), 1)
	if s.p.Bucket <= 1 {
		return max(t, n)
	}
	for t < n {
		next := int64(math.Ceil(float64(t) * s.p.Bucket))
		t = max(next, t+1)
	}
	return t
}
