package stages

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"usocks/wire"
)

// Receiving over lanes (SPEC-v2.md §7d). Each lane's decrypt stage holds
// a LaneIn: the lane's SEQ messages say which session number its next
// numbered frame has, and LaneIn hands each numbered frame to the
// session's Reorder with that number. Reorder hands frames to the demux
// strictly in number order, once each: a number already delivered or
// already held is a duplicate (a frame resent after a lane was lost) and
// is dropped. Frames that arrive early wait, within a bound.
//
// Goroutines: every lane's decrypt calls Reorder.put; a mutex orders
// them, and whichever lane brings the missing number delivers what it
// unblocks. The frames channel is the session's; the delivering lane's
// context bounds the send, and what it could not hand on stays held for
// the next lane.

// DefaultReorderBytes bounds the frames a session holds out of order: 16
// MiB, four times the default resend buffer that bounds what a peer can
// have sent and not seen acknowledged.
const DefaultReorderBytes = 16 << 20

// maxReorderAhead bounds how far ahead of the next expected number a
// frame may be.
const maxReorderAhead = 1 << 20

// ErrReorder is a lane frame beyond the reorder bound: a protocol error.
var ErrReorder = fmt.Errorf("%w: lane frame beyond the reorder bound", ErrProtocol)

// Reorder is the in-order delivery of a session's lanes.
type Reorder struct {
	Out   chan<- Frame
	State *ResumeState
	// MaxBytes bounds what is held (payload buffers plus a fixed cost
	// per frame); 0 means DefaultReorderBytes.
	MaxBytes int64

	mu    sync.Mutex
	held  map[uint64]Frame
	bytes int64
	dups  atomic.Uint64
	most  atomic.Int64
}

// Duplicates counts frames dropped because they had arrived already;
// MostHeld the most bytes ever held out of order.
func (r *Reorder) Duplicates() uint64 { return r.dups.Load() }
func (r *Reorder) MostHeld() int64    { return r.most.Load() }

// Release frees what is held (the session ended).
func (r *Reorder) Release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, f := range r.held {
		f.Release()
		delete(r.held, k)
	}
	r.bytes = 0
}

// put takes numbered frame seq and delivers what is in order.
func (r *Reorder) put(ctx context.Context, seq uint64, f Frame) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held == nil {
		r.held = make(map[uint64]Frame)
	}
	next := r.State.received.Load() // written under r.mu only
	if _, dup := r.held[seq]; dup || seq < next {
		r.dups.Add(1)
		f.Release()
		return nil
	}
	f = compact(f)
	if seq != next || len(r.held) > 0 {
		cost := resendFrameCost + keptBy(&f)
		limit := r.MaxBytes
		if limit <= 0 {
			limit = DefaultReorderBytes
		}
		if seq-next > maxReorderAhead || r.bytes+cost > limit {
			f.Release()
			return fmt.Errorf("%w: frame %d, expecting %d, %d bytes held", ErrReorder, seq, next, r.bytes)
		}
		r.held[seq] = f
		r.bytes += cost
		if r.bytes > r.most.Load() {
			r.most.Store(r.bytes)
		}
		f = Frame{}
		var ok bool
		if f, ok = r.held[next]; !ok {
			return nil
		}
	}
	for {
		n := len(f.Payload)
		cost := resendFrameCost + keptBy(&f)
		select {
		case r.Out <- f:
		case <-ctx.Done():
			if _, held := r.held[next]; !held {
				r.held[next] = f
				r.bytes += cost
			}
			return ctx.Err()
		}
		if _, held := r.held[next]; held {
			delete(r.held, next)
			r.bytes -= cost
		}
		r.State.delivered(n)
		next++
		var ok bool
		if f, ok = r.held[next]; !ok {
			return nil
		}
	}
}

// LaneIn is what a lane's decrypt stage knows of the lanes.
type LaneIn struct {
	Reorder *Reorder
	// Control, if set, is told every known control message but SEQ
	// (LANES, HEALTH, GOING_AWAY), on the decrypt's goroutine.
	Control func(wire.Control)
	seq     uint64
	haveSeq bool
	records atomic.Uint64 // records opened on the lane (Seen)
}

// Lane liveness (SPEC-v2.md §7d). A sender's Lanes stage probes every
// lane it has handed nothing for LaneProbe(keepalive); a receiver cuts a
// lane on which no record arrived for LaneTimeout(keepalive) (Watch),
// sooner than the session's keepalive timeout (2 intervals) would cut
// every lane for the gap the silent lane leaves in the sequence.

// MaxLaneProbe caps the probe interval, so that a peer with a shorter
// keepalive (down to 2 × MaxLaneProbe) does not take an idle lane for a
// dead one.
const MaxLaneProbe = 2500 * time.Millisecond

// LaneProbe is the probe interval for a keepalive interval (0: off).
func LaneProbe(keepalive time.Duration) time.Duration {
	return min(keepalive/4, MaxLaneProbe)
}

// LaneTimeout is how long a lane may stay silent (0: never cut).
func LaneTimeout(keepalive time.Duration) time.Duration { return keepalive }

// ErrLaneSilent ends a lane on which nothing arrived for LaneTimeout: a
// lost backend (it wraps ErrPeerDead).
var ErrLaneSilent = fmt.Errorf("%w: nothing received on the lane", ErrPeerDead)

// Seen notes a record opened on the lane (the lane's decrypt).
func (l *LaneIn) Seen() { l.records.Add(1) }

// Watch returns ErrLaneSilent once no record has been Seen for timeout
// while alive says the session is running, and nil when ctx is done. It
// looks every timeout/8, so it fires within 9/8 timeout of the last
// record.
func (l *LaneIn) Watch(ctx context.Context, timeout time.Duration, alive func() bool) error {
	t := time.NewTicker(max(timeout/8, time.Millisecond))
	defer t.Stop()
	last, at := l.records.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if n := l.records.Load(); n != last || !alive() {
				last, at = n, now
			} else if silent := now.Sub(at); silent >= timeout {
				return fmt.Errorf("%w for %v", ErrLaneSilent, silent.Round(time.Millisecond))
			}
		}
	}
}

// take handles a CONTROL or ACK frame of the lane.
func (l *LaneIn) take(wf *wire.Frame) error {
	if wf.Type == wire.FrameAck {
		l.Reorder.State.ackedMax(wire.AckCount(wf))
		return nil
	}
	c, known, err := wire.ParseControl(wf.Payload)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	case !known:
		return nil // forward compatibility (§7c)
	case c.Type == wire.ControlSeq:
		l.seq, l.haveSeq = c.Seq, true
	case l.Control != nil:
		l.Control(c)
	}
	return nil
}

// deliver numbers a whole numbered frame of the lane and hands it on.
func (l *LaneIn) deliver(ctx context.Context, f Frame) error {
	if !l.haveSeq {
		f.Release()
		return fmt.Errorf("%w: numbered frame on a lane before its SEQ", ErrProtocol)
	}
	seq := l.seq
	l.seq++
	return l.Reorder.put(ctx, seq, f)
}

// ackedMax records an ACK received on a lane: lanes carry ACKs sent at
// different times, so a lower count than one seen is old news, not an
// error. A count above what was sent is caught by the Lanes stage.
func (r *ResumeState) ackedMax(n uint64) {
	for {
		old := r.peerAck.Load()
		if n <= old || r.peerAck.CompareAndSwap(old, n) {
			break
		}
	}
	r.notify()
}
