package stages

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

// Resend is the mux → link stage of a resumable session (SPEC-v2.md §7b).
// It outlives the session's backend connections ("links"): every frame the
// mux emits is a numbered frame, and Resend keeps each one in a bounded
// buffer until the peer's ACK says it arrived. When a link is lost, the
// session attaches the next one with the count the peer reported in the
// resumption handshake, and Resend sends again from there.
//
// Goroutines: Run owns the buffer, the numbering and the current link's
// output. Attach and Detach are called by the session's goroutine and wait
// for Run to take them. ResumeState is shared with the decrypt stage of
// whichever link is running (one at a time).
//
// Ordering: frames leave in the order the mux emitted them, on one link at
// a time; TCP keeps that order, so a frame's number is implicit. ACK
// frames are not numbered: Run adds them to the output when
// ResumeState says enough has arrived (AckFrames numbered frames, or
// AckBytes of payload), or AckDelay after the first unacknowledged frame.
//
// Memory: Run stops taking batches from the mux while it keeps Limit bytes
// (back-pressure to the streams, whose credit already bounds each one);
// nothing is ever dropped. It always takes a batch when its buffer is
// empty, so a batch larger than Limit cannot stall the session. So it
// keeps at most Limit plus one batch (maxBatchBytes of payload). It is
// not charged to the receive budgets (MemBudget): a peer that stops
// acknowledging must not make other sessions' streams reset.
type Resend struct {
	In    <-chan Batch
	State *ResumeState
	// Limit bounds the bytes kept (payload buffers plus a fixed cost per
	// frame); 0 means DefaultResumeBuffer.
	Limit int
	// AckFrames, AckBytes and AckDelay tune acknowledgements; zero takes
	// the defaults of SPEC-v2.md §7b.
	AckFrames uint64
	AckBytes  int64
	AckDelay  time.Duration
	// Total, if set, is kept up to date with the bytes the buffer
	// holds (Kept), summed over every stage that shares it (metrics).
	Total           *atomic.Int64
	Log             *logrus.Entry
	attach          chan attachReq
	stopped         chan struct{} // closed when Run returns
	sent, confirmed atomic.Uint64
	kept, heldCap   atomic.Int64
}

// Resume defaults (SPEC-v2.md §7b).
const (
	// DefaultResumeBuffer is a session's resend buffer.
	DefaultResumeBuffer = 4 << 20
	// DefaultAckFrames and DefaultAckBytes: an ACK after this many
	// numbered frames or payload bytes received.
	DefaultAckFrames = 32
	DefaultAckBytes  = 64 << 10
	// DefaultAckDelay: an ACK at most this long after a numbered frame.
	DefaultAckDelay = 25 * time.Millisecond
	// resendFrameCost is what a kept frame costs beside its payload.
	resendFrameCost = 64
	// resendIdleCap is the queue capacity (frames) an empty buffer may
	// keep for the next frames; a larger one is given back.
	resendIdleCap = 64
)

// ErrBadAck means the peer acknowledged frames that were never sent, or
// fewer than it acknowledged before: a protocol error.
var ErrBadAck = fmt.Errorf("%w: acknowledgement out of range", ErrProtocol)

// ResumeState is what the receive side of a resumable session tells its
// send side: the numbered frames handed to the demux, and the peer's
// acknowledgements. The running link's decrypt stage writes it.
type ResumeState struct {
	received atomic.Uint64
	bytes    atomic.Int64
	peerAck  atomic.Uint64
	// sealed counts batches the link's encrypt stage has sealed (see
	// Encrypt.Resume).
	sealed atomic.Uint64
	wake   chan struct{}
	// wakeAt and wakeBytes are the received count and bytes at which a
	// delivery has something for the send side to do (arm its ACK timer,
	// or send an ACK), as the Resend stage last published them: below
	// both, a delivery does not wake it (one goroutine switch per frame
	// received, on the path of every round trip). Zero: wake at every
	// frame.
	wakeAt    atomic.Uint64
	wakeBytes atomic.Int64
}

// NewResumeState returns the state of a new session.
func NewResumeState() *ResumeState { return &ResumeState{wake: make(chan struct{}, 1)} }

// Received is the count of numbered frames handed to the demux.
func (r *ResumeState) Received() uint64 { return r.received.Load() }

// delivered counts one numbered frame of n payload bytes handed to the
// demux (decrypt's goroutine).
func (r *ResumeState) delivered(n int) {
	rc := r.received.Add(1)
	b := r.bytes.Add(int64(n))
	// The count is added before the thresholds are read, and Resend
	// publishes them before it reads the count (sequentially consistent
	// atomics): either it sees this frame or this frame sees its
	// thresholds, so no ACK is ever left without a wake.
	if rc >= r.wakeAt.Load() || b >= r.wakeBytes.Load() {
		r.notify()
	}
}

// acked records the peer's ACK (decrypt's goroutine). A count below an
// earlier one is a protocol error.
func (r *ResumeState) acked(n uint64) error {
	if n < r.peerAck.Load() {
		return ErrBadAck
	}
	r.peerAck.Store(n)
	r.notify()
	return nil
}

func (r *ResumeState) notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

type attachReq struct {
	out      chan<- Batch // nil: detach
	peerRecv uint64
	err      chan error
}

func (r *Resend) req() chan attachReq {
	if r.attach == nil {
		r.attach = make(chan attachReq)
		r.stopped = make(chan struct{})
	}
	return r.attach
}

// errResendStopped: Attach after the stage ended (the session is ending).
var errResendStopped = fmt.Errorf("resend stage stopped")

// Init prepares the stage; call it before Run and Attach.
func (r *Resend) Init() { r.req() }

// Attach makes out the current link's input, resending from the peer's
// count peerRecv (the resumption handshake's). A count outside what the
// buffer can serve is ErrBadAck; the session must then end.
func (r *Resend) Attach(ctx context.Context, out chan<- Batch, peerRecv uint64) error {
	q := attachReq{out: out, peerRecv: peerRecv, err: make(chan error, 1)}
	select {
	case r.attach <- q:
	case <-r.stopped:
		return errResendStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-q.err
}

// Detach closes the current link's input; frames wait in the buffer.
func (r *Resend) Detach(ctx context.Context) {
	q := attachReq{err: make(chan error, 1)}
	select {
	case r.attach <- q:
		<-q.err
	case <-r.stopped:
	case <-ctx.Done():
	}
}

// Sent is the count of numbered frames taken from the mux so far; Acked
// the count the peer has confirmed. Both are safe to read anywhere.
func (r *Resend) Sent() uint64  { return r.sent.Load() }
func (r *Resend) Acked() uint64 { return r.confirmed.Load() }

// Kept is the bytes the buffer holds now.
func (r *Resend) Kept() int64 { return r.kept.Load() }

// held is the capacity, in frames, of the buffer's queue: what it keeps
// allocated beside the frames themselves.
func (r *Resend) held() int64 { return r.heldCap.Load() }

// resendBuf is the numbered frames not yet acknowledged, oldest first.
type resendBuf struct {
	q     []Frame
	cost  []int64
	head  int    // q[head] is frame number base
	base  uint64 // number of q[head]
	bytes int64
}

func (b *resendBuf) end() uint64 { return b.base + uint64(len(b.q)-b.head) }

func (b *resendBuf) push(f Frame, c int64) {
	b.q, b.cost = append(b.q, f), append(b.cost, c)
	b.bytes += c
}

// dropTo releases every frame numbered below n; it returns the bytes freed.
func (b *resendBuf) dropTo(n uint64) int64 {
	freed := int64(0)
	for b.base < n && b.head < len(b.q) {
		b.q[b.head].Release()
		b.q[b.head] = Frame{}
		freed += b.cost[b.head]
		b.head++
		b.base++
	}
	b.bytes -= freed
	if b.head == len(b.q) {
		// Everything acknowledged: an idle session keeps no queue (a
		// bulk transfer grows it to thousands of frames).
		if cap(b.q) > resendIdleCap {
			b.q, b.cost = nil, nil
		}
		b.q, b.cost, b.head = b.q[:0], b.cost[:0], 0
	} else if b.head > 1024 && b.head*2 > len(b.q) {
		n := copy(b.q, b.q[b.head:])
		copy(b.cost, b.cost[b.head:])
		clear(b.q[n:])
		b.q, b.cost, b.head = b.q[:n], b.cost[:n], 0
	}
	return freed
}

// at is frame number n (base ≤ n < end).
func (b *resendBuf) at(n uint64) *Frame { return &b.q[b.head+int(n-b.base)] }

// releaseFrom frees the frames numbered next and above (never handed to
// a link) and forgets the rest without freeing them: when the stage ends
// with the session, a link's encrypt may still be sealing those, so their
// buffers go to the garbage collector, never back to the pool where
// another stream could reuse them under the seal.
// It returns how many it freed.
func (b *resendBuf) releaseFrom(next uint64) int {
	freed := 0
	for i := b.head + int(min(max(next, b.base), b.end())-b.base); i < len(b.q); i++ {
		b.q[i].Release()
		freed++
	}
	b.q, b.cost, b.head, b.bytes = nil, nil, 0, 0
	return freed
}

// Run keeps, sends and resends until ctx is done, or the mux has closed
// In and every frame has been handed to a link (it then closes that
// link's input).
func (r *Resend) Run(ctx context.Context) error {
	limit := int64(r.Limit)
	if limit <= 0 {
		limit = DefaultResumeBuffer
	}
	ackFrames, ackBytes, ackDelay := r.AckFrames, r.AckBytes, r.AckDelay
	if ackFrames == 0 {
		ackFrames = DefaultAckFrames
	}
	if ackBytes == 0 {
		ackBytes = DefaultAckBytes
	}
	if ackDelay == 0 {
		ackDelay = DefaultAckDelay
	}
	attach := r.req()
	defer close(r.stopped)
	var buf resendBuf
	var out chan<- Batch
	var next uint64 // next frame number to hand to out
	defer func() {
		buf.releaseFrom(next)
		r.noteKept(&buf)
	}()
	var ackedAt uint64   // received count our last ACK (or handshake) told
	var ackedBytes int64 // received bytes at that ACK
	ackTimer := time.NewTimer(time.Hour)
	ackTimer.Stop()
	defer ackTimer.Stop()
	timerOn := false
	ackDue := false
	// pending is the batch offered to out, rebuilt only when what it
	// would hold changes.
	type pendKey struct {
		next, end uint64
		ack       bool
	}
	var pending Batch
	var pkey pendKey
	// Small batches (the round trips of an interactive stream) cycle
	// through a ring, as the mux's do: a slot is built into until it is
	// sent, and reused only after its consumer (encrypt or the defence
	// stage, both done with a batch before they take the next) has taken
	// batchRing-1 batches sent after it. Only the array is reused: an
	// ACK's payload is its own (the defence stage may queue the frame for
	// longer). A new link starts a new ring: the old link's consumer may
	// still hold a slot. Large batches are made afresh, so that a bulk
	// transfer leaves nothing grown behind, and so is every batch for an
	// out channel longer than a link's (BatchQueueLen).
	var ring [batchRing]Batch
	slot := 0
	reuse := false
	var pendFrames, pendAckAt uint64 // numbered frames in pending; the count its ACK says
	in := r.In
	inDone := false
	st := r.State
	for {
		// Acknowledgements both ways.
		if pa := st.peerAck.Load(); pa > buf.base {
			if pa > buf.end() {
				return fmt.Errorf("%w: peer acknowledged %d frames, %d sent", ErrBadAck, pa, buf.end())
			}
			// What the peer acknowledged was sealed before it was sent:
			// this load orders the seal before the frees below.
			_ = st.sealed.Load()
			buf.dropTo(pa)
			r.noteKept(&buf)
			r.confirmed.Store(pa)
			next = max(next, buf.base)
		}
		for out != nil {
			// Publish what the next deliveries must wake us for, then
			// look at the count (see ResumeState.delivered).
			switch {
			case ackDue: // an ACK is offered already
				st.wakeAt.Store(math.MaxUint64)
				st.wakeBytes.Store(math.MaxInt64)
			case timerOn: // the timer runs: wake for the thresholds
				st.wakeAt.Store(ackedAt + ackFrames)
				st.wakeBytes.Store(ackedBytes + ackBytes)
			default: // wake for the first frame, to arm the timer
				st.wakeAt.Store(ackedAt + 1)
				st.wakeBytes.Store(ackedBytes + ackBytes)
			}
			rc := st.received.Load()
			if rc <= ackedAt || ackDue {
				break
			}
			if rc-ackedAt >= ackFrames || st.bytes.Load()-ackedBytes >= ackBytes {
				ackDue = true
				continue
			}
			if timerOn {
				break
			}
			ackTimer.Reset(ackDelay)
			timerOn = true
		}
		r.noteKept(&buf)
		if inDone && out != nil && next == buf.end() && !ackDue {
			close(out)
			return nil
		}
		take := in
		if buf.bytes >= limit && buf.head < len(buf.q) {
			take = nil // back-pressure: wait for ACKs
		}
		var send chan<- Batch
		if out == nil || (next == buf.end() && !ackDue) {
			pending = nil
		} else if pk := (pendKey{next, min(buf.end(), next+maxBatchFrames), ackDue}); pending == nil || pk != pkey {
			pkey = pk
			pending = ring[slot][:0]
			if n := min(buf.end()-next, maxBatchFrames) + 1; uint64(cap(pending)) < n {
				pending = make(Batch, 0, n)
			}
			// At most maxBatchFrames and maxBatchBytes, as the mux's
			// batches: encrypt seals a batch into one buffer and keeps
			// such buffers for the next batches.
			for n, bytes := next, 0; n < buf.end() && len(pending) < maxBatchFrames && (bytes < maxBatchBytes || len(pending) == 0); n++ {
				f := *buf.at(n)
				bytes += len(f.Payload)
				f.buf = nil // the buffer keeps it until the ACK
				pending = append(pending, f)
			}
			pendFrames = uint64(len(pending))
			if ackDue {
				rc := st.received.Load()
				pendAckAt = rc
				pending = append(pending, Frame{Frame: wire.Frame{Type: wire.FrameAck, Payload: wire.AckPayload(make([]byte, 0, wire.AckLen), rc)}})
			}
			if reuse && cap(pending) <= ringBatchCap {
				// No stale frames past the batch keep payloads reachable.
				clear(pending[len(pending):cap(pending)])
				ring[slot] = pending
			} else {
				ring[slot] = nil
			}
		}
		if pending != nil {
			send = out
		}
		select {
		case b, ok := <-take:
			if !ok {
				in, inDone = nil, true
				continue
			}
			for i := range b {
				r.keep(&buf, b[i])
				b[i] = Frame{} // the mux reuses b's array: no stale reference keeps the buffer
			}
			r.sent.Store(buf.end())
		case send <- pending:
			if ackDue {
				ackDue = false
				ackedAt, ackedBytes = pendAckAt, st.bytes.Load()
				if timerOn && !ackTimer.Stop() {
					<-ackTimer.C
				}
				timerOn = false
			}
			// The batch is encrypt's now: only what was noted before.
			next += pendFrames
			pending = nil
			slot = (slot + 1) % batchRing
		case <-ackTimer.C:
			timerOn = false
			if out != nil && st.received.Load() > ackedAt {
				ackDue = true
			}
		case <-st.wake:
		case q := <-attach:
			pending = nil
			ring, slot, reuse = [batchRing]Batch{}, 0, cap(q.out) <= BatchQueueLen
			if out != nil {
				close(out)
			}
			out, ackDue = q.out, false
			if q.out == nil {
				q.err <- nil
				continue
			}
			if q.peerRecv < buf.base || q.peerRecv > buf.end() {
				out = nil
				q.err <- fmt.Errorf("%w: peer resumes at frame %d, buffer holds %d..%d", ErrBadAck, q.peerRecv, buf.base, buf.end())
				continue
			}
			// The handshake told the peer our count, and told us its.
			buf.dropTo(q.peerRecv)
			r.noteKept(&buf)
			r.confirmed.Store(buf.base)
			next = q.peerRecv
			ackedAt, ackedBytes = st.received.Load(), st.bytes.Load()
			r.Log.WithFields(logrus.Fields{"resend_from": next, "resend_frames": buf.end() - next}).Debug("link attached")
			q.err <- nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ringBatchCap is the largest batch array the resend stage keeps for the
// next batches.
const ringBatchCap = 8

// noteKept publishes what the buffer holds (Kept, held).
func (r *Resend) noteKept(b *resendBuf) {
	if was := r.kept.Swap(b.bytes); r.Total != nil && was != b.bytes {
		r.Total.Add(b.bytes - was)
	}
	r.heldCap.Store(int64(cap(b.q)))
}

// keep numbers f and buffers it.
func (r *Resend) keep(b *resendBuf, f Frame) {
	c := int64(resendFrameCost + len(f.Payload))
	if f.buf != nil {
		c = resendFrameCost + int64(len(f.buf.B))
	}
	b.push(f, c)
}
