package stages

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

// MaxLaneBuffer caps what a Lanes stage keeps unacknowledged, whatever
// its Limit: half the peer's reorder bound (DefaultReorderBytes), so that
// what a receiver holds out of order never reaches it.
const MaxLaneBuffer = DefaultReorderBytes / 2

// Lanes is the mux → lanes stage of a session striped over several
// backend connections at once (SPEC-v2.md §7d). Like Resend it numbers
// every frame the mux emits and keeps it in a bounded buffer until the
// peer's ACK covers it; unlike Resend it feeds several links ("lanes") at
// the same time. Each batch it hands a lane is a run of consecutive
// numbers led by a CONTROL SEQ message with the run's first number, so
// the receiver (Reorder) can put the lanes' frames back in order.
//
// Scheduler: a batch goes to the lane whose input queue holds the fewest
// batches (round robin among equals); when every lane's queue is full, to
// the first lane that takes one. A lane whose connection is slow or
// stalled stops draining its queue and so gets nothing more, without any
// clock or estimate: least-queued approximates "shortest expected delay"
// from what each lane has actually drained.
//
// Losing a lane: the session calls Remove once the lane's stages have all
// stopped; every run it was given and the peer has not acknowledged is
// sent again on the other lanes (copied: the frame's buffer stays the
// buffer's, and may be freed by an ACK while the copy waits to be
// sealed). The receiver drops what it has already. Retire is a planned
// end (rotation): the lane says GOING_AWAY, gets no more runs, and its
// input is closed, so its backend writer half-closes it.
//
// Goroutines: Run owns the buffer and every lane's input channel (it is
// their only sender and closes them); Add, Retire and Remove are called
// by the session and wait for Run to take them. State is shared with the
// lanes' decrypt stages through Reorder.
type Lanes struct {
	In    <-chan Batch
	State *ResumeState
	// Limit bounds the bytes kept, as Resend.Limit, and at most
	// MaxLaneBuffer.
	Limit int
	// AckFrames, AckBytes and AckDelay tune acknowledgements (zero: the
	// defaults of SPEC-v2.md §7b).
	AckFrames uint64
	AckBytes  int64
	AckDelay  time.Duration
	// Total, if set, sums the bytes kept over every stage sharing it.
	Total *atomic.Int64
	// Probe, if set, is the lane probe interval (SPEC-v2.md §7d, lane
	// liveness): a lane handed nothing for Probe gets a HEALTH message,
	// so that every lane carries a record at least that often and its
	// receiver can tell a silent lane from an idle one. Health makes the
	// message (nil: up and count from the lanes running here).
	Probe  time.Duration
	Health func() wire.Control
	Log    *logrus.Entry

	ctl     chan laneReq
	stopped chan struct{}
	sent    atomic.Uint64
	acked   atomic.Uint64
	kept    atomic.Int64
	resent  atomic.Uint64
	probes  atomic.Uint64
}

type laneOp uint8

const (
	laneAdd laneOp = iota
	laneRetire
	laneRemove
	laneSay
)

type laneReq struct {
	op       laneOp
	id       int
	out      chan<- Batch
	peerRecv uint64
	say      []wire.Control
	err      chan error
}

// lane is one lane as Run sees it.
type lane struct {
	id      int
	out     chan<- Batch // nil once closed
	retired bool         // no more runs; close out when say is sent
	say     Batch        // control frames for this lane alone, sent first
	busy    bool         // handed something since the last probe tick
}

// run is a range of numbers [from, to) handed to one lane.
type run struct {
	lane     int
	from, to uint64
}

// Init prepares the stage; call it before Run and the other methods.
func (l *Lanes) Init() {
	l.ctl = make(chan laneReq)
	l.stopped = make(chan struct{})
}

func (l *Lanes) request(ctx context.Context, q laneReq) error {
	q.err = make(chan error, 1)
	select {
	case l.ctl <- q:
	case <-l.stopped:
		return errResendStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-q.err
}

// Add makes out the input of lane id. say, if any, goes first on it (the
// LANES announcement). peerRecv is the count of numbered frames the peer
// reported in the lane's handshake: what is below it is acknowledged.
func (l *Lanes) Add(ctx context.Context, id int, out chan<- Batch, peerRecv uint64, say ...wire.Control) error {
	return l.request(ctx, laneReq{op: laneAdd, id: id, out: out, peerRecv: peerRecv, say: say})
}

// Say queues control messages for lane id alone (the LANES answer).
func (l *Lanes) Say(ctx context.Context, id int, say ...wire.Control) error {
	return l.request(ctx, laneReq{op: laneSay, id: id, say: say})
}

// Retire ends lane id on purpose: GOING_AWAY, then its input closes.
func (l *Lanes) Retire(ctx context.Context, id int, reason uint8) {
	_ = l.request(ctx, laneReq{op: laneRetire, id: id, say: []wire.Control{{Type: wire.ControlGoingAway, Index: uint8(id), Reason: reason}}})
}

// Remove forgets lane id, whose stages have stopped: what it was given
// and the peer has not acknowledged is sent again on the other lanes.
func (l *Lanes) Remove(ctx context.Context, id int) {
	_ = l.request(ctx, laneReq{op: laneRemove, id: id})
}

// Sent, Acked, Kept and Resent: numbered frames taken from the mux, the
// count the peer confirmed, the bytes kept, the frames sent again after a
// lane was lost. Safe to read anywhere.
func (l *Lanes) Sent() uint64   { return l.sent.Load() }
func (l *Lanes) Acked() uint64  { return l.acked.Load() }
func (l *Lanes) Kept() int64    { return l.kept.Load() }
func (l *Lanes) Resent() uint64 { return l.resent.Load() }

// Probes counts the HEALTH messages sent on idle lanes.
func (l *Lanes) Probes() uint64 { return l.probes.Load() }

// lanesRun is Run's state.
type lanesRun struct {
	l     *Lanes
	buf   resendBuf
	next  uint64 // next number never handed to a lane
	retx  []run  // ranges to send again (lane unused), lowest first
	runs  []run  // what each lane was given, not yet acknowledged
	lanes []*lane
	rr    int // where leastQueued starts looking
	// The batch on offer and what it holds.
	pending     Batch
	pFrom, pTo  uint64
	pRetx, pAck bool
	pAckAt      uint64
	ackDue      bool
	ackedAt     uint64
	ackedBytes  int64
	inDone      bool
	limit       int64
	ackFrames   uint64
	ackBytes    int64
	ackDelay    time.Duration
	timer       *time.Timer
	timerOn     bool
	probe       <-chan time.Time // ticks every Probe/2 (nil: no probes)
}

// Run keeps, stripes and resends until ctx is done, or the mux has closed
// In and the peer has acknowledged every frame (it then acknowledges
// what it received and closes the lanes' inputs).
func (l *Lanes) Run(ctx context.Context) error {
	defer close(l.stopped)
	r := &lanesRun{l: l, limit: int64(l.Limit), ackFrames: l.AckFrames, ackBytes: l.AckBytes, ackDelay: l.AckDelay}
	if r.limit <= 0 {
		r.limit = DefaultResumeBuffer
	}
	r.limit = min(r.limit, MaxLaneBuffer)
	if r.ackFrames == 0 {
		r.ackFrames = DefaultAckFrames
	}
	if r.ackBytes == 0 {
		r.ackBytes = DefaultAckBytes
	}
	if r.ackDelay == 0 {
		r.ackDelay = DefaultAckDelay
	}
	r.timer = time.NewTimer(time.Hour)
	r.timer.Stop()
	defer r.timer.Stop()
	if l.Probe > 0 {
		t := time.NewTicker(l.Probe / 2)
		defer t.Stop()
		r.probe = t.C
	}
	defer func() {
		r.buf.releaseFrom(r.next)
		l.noteKept(&r.buf)
		for _, ln := range r.lanes {
			ln.close()
		}
	}()
	in := l.In
	st := l.State
	for {
		if err := r.acks(); err != nil {
			return err
		}
		if r.inDone && r.next == r.buf.end() && len(r.retx) == 0 {
			// The mux is done: what is left is to see everything
			// acknowledged (a lane may still be lost, and its frames
			// sent again), and to acknowledge what arrived at once.
			if st.received.Load() > r.ackedAt && !r.ackDue && r.up() > 0 {
				r.ackDue, r.pending = true, nil
			}
			if r.buf.base == r.buf.end() && !r.ackDue {
				for _, ln := range r.lanes {
					if len(ln.say) == 0 {
						ln.close()
					}
				}
				if r.allClosed() {
					return nil
				}
			}
		}
		take := in
		if r.buf.bytes >= r.limit && r.buf.head < len(r.buf.q) {
			take = nil // back-pressure: wait for ACKs
		}
		progress := false
		select {
		case <-r.probe: // a busy loop reaches wait seldom
			r.probeIdle()
		default:
		}
		if take != nil {
			select {
			case b, ok := <-take:
				r.takeIn(b, ok, &in)
				progress = true
			default:
			}
		}
		for _, ln := range r.lanes {
			if len(ln.say) > 0 && ln.out != nil && len(ln.out) < cap(ln.out) {
				ln.out <- ln.say
				ln.said()
				progress = true
			}
		}
		r.offer()
		if r.pending != nil {
			if ln := r.leastQueued(); ln != nil {
				ln.out <- r.pending
				r.commit(ln)
				progress = true
			}
		}
		if progress {
			continue
		}
		if err := r.wait(ctx, take, &in, st); err != nil {
			return err
		}
	}
}

func (ln *lane) close() {
	if ln.out != nil {
		close(ln.out)
		ln.out = nil
	}
}

// said notes that the lane's control frames were handed on.
func (ln *lane) said() {
	ln.say, ln.busy = nil, true
	if ln.retired {
		ln.close()
	}
}

func (r *lanesRun) allClosed() bool {
	for _, ln := range r.lanes {
		if ln.out != nil {
			return false
		}
	}
	return true
}

func (r *lanesRun) takeIn(b Batch, ok bool, in *<-chan Batch) {
	if !ok {
		*in, r.inDone = nil, true
		return
	}
	for _, f := range b {
		(*Resend).keep(nil, &r.buf, f) // numbered and costed as Resend does
	}
	r.l.sent.Store(r.buf.end())
	r.l.noteKept(&r.buf)
}

func (l *Lanes) noteKept(b *resendBuf) {
	if was := l.kept.Swap(b.bytes); l.Total != nil && was != b.bytes {
		l.Total.Add(b.bytes - was)
	}
}

// acks applies the peer's acknowledgements and sees whether one of ours
// is due.
func (r *lanesRun) acks() error {
	st := r.l.State
	if pa := st.peerAck.Load(); pa > r.buf.base {
		if pa > r.buf.end() {
			return fmt.Errorf("%w: peer acknowledged %d frames, %d sent", ErrBadAck, pa, r.buf.end())
		}
		_ = st.sealed.Load() // orders the seals before the frees (see Resend)
		r.buf.dropTo(pa)
		r.l.noteKept(&r.buf)
		r.l.acked.Store(pa)
		r.next = max(r.next, r.buf.base)
		r.runs = slices.DeleteFunc(r.runs, func(x run) bool { return x.to <= pa })
		r.pending = nil
	}
	if r.up() > 0 {
		if rc := st.received.Load(); rc > r.ackedAt && !r.ackDue {
			if rc-r.ackedAt >= r.ackFrames || st.bytes.Load()-r.ackedBytes >= r.ackBytes {
				r.ackDue, r.pending = true, nil
			} else if !r.timerOn {
				r.timer.Reset(r.ackDelay)
				r.timerOn = true
			}
		}
	}
	return nil
}

// probeIdle queues a HEALTH message on every running lane that was
// handed nothing since the previous tick: ticks come every Probe/2, so a
// lane goes at most about Probe without a record.
func (r *lanesRun) probeIdle() {
	for _, ln := range r.lanes {
		if ln.out == nil || ln.retired {
			continue
		}
		if !ln.busy && len(ln.say) == 0 {
			c := wire.Control{Type: wire.ControlHealth, Up: uint8(min(r.up(), 255)), Count: uint8(min(len(r.lanes), 255))}
			if r.l.Health != nil {
				c = r.l.Health()
			}
			ln.say = Batch{{Frame: wire.ControlFrame(c)}}
			r.l.probes.Add(1)
		}
		ln.busy = false
	}
}

// up is the count of lanes that take runs.
func (r *lanesRun) up() int {
	n := 0
	for _, ln := range r.lanes {
		if ln.out != nil && !ln.retired {
			n++
		}
	}
	return n
}
