package stages

import (
	"sync"
	"sync/atomic"
)

// The receive buffer of a stream: the bounded hop between the demux and
// the stream's down pump (see tunnel_stream.go for the flow-control rules).

// recvBuf holds data received for a stream until its socket takes it.
// Demux pushes, the down pump pops; size never exceeds streamWindow.
type recvBuf struct {
	mu     sync.Mutex
	chunks []Frame
	// first backs chunks while few frames wait, so that a stream that
	// empties its buffer does not allocate again for the next message.
	first [4]Frame
	size  int
	// window is how much the peer may have in flight or buffered here: it
	// starts at streamWindow and only the down pump grows it.
	window atomic.Int64
	// received is every payload byte the peer sent on the stream (v2);
	// granted is the credit given in all, counted before each grant is
	// queued: streamWindow plus every WINDOW increment.
	received int64
	granted  atomic.Int64
	eof      bool
	// mem, if set, is charged the memory each buffered chunk keeps
	// (keptBy) while it waits: the session's receive budget.
	mem    *MemBudget
	notify chan struct{} // cap 1: data or EOF arrived
	space  chan struct{} // cap 1: data was taken (legacy back-pressure)
}

func (r *recvBuf) signalSpace() {
	select {
	case r.space <- struct{}{}:
	default:
	}
}

// pushWait is push for v1, which has no windows: when the buffer is full
// it waits for room, which stops the demux and so the whole backend — v1's
// only back-pressure — rather than letting memory grow.
func (r *recvBuf) pushWait(f Frame, aborted, ctxDone <-chan struct{}) error {
	for {
		r.mu.Lock()
		full := r.size > 0 && r.size+len(f.Payload) > streamWindow
		r.mu.Unlock()
		if !full {
			return r.pushLimit(f, 1<<30)
		}
		select {
		case <-r.space:
		case <-aborted:
			f.Release()
			return nil
		case <-ctxDone:
			f.Release()
			return nil
		}
	}
}

func (r *recvBuf) wake() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// push adds the payload of f from the peer; it takes ownership of f.
// errFlowControl if the payload would take what the peer sent beyond the
// credit granted in all (SPEC-v2.md §6d), or comes after its FIN.
func (r *recvBuf) push(f Frame) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := int64(len(f.Payload))
	if r.eof || r.received+n > r.granted.Load() {
		f.Release()
		return errFlowControl
	}
	if err := r.appendLocked(f); err != nil {
		return err
	}
	r.received += n
	return nil
}

// inject adds bytes that did not come from the peer (the client's relay
// reply): they spend no credit.
func (r *recvBuf) inject(f Frame) error { return r.pushLimit(f, 1<<30) }

// grant counts credit about to be given to the peer.
func (r *recvBuf) grant(n int) { r.granted.Add(int64(n)) }

// buffered is how many bytes wait for the socket.
func (r *recvBuf) buffered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.size
}

func (r *recvBuf) pushLimit(f Frame, limit int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.eof || r.size+len(f.Payload) > limit {
		f.Release()
		return errFlowControl
	}
	return r.appendLocked(f)
}

// appendLocked buffers f (r.mu held); errMemory if the memory it keeps
// would pass the budget.
func (r *recvBuf) appendLocked(f Frame) error {
	n := len(f.Payload)
	r.size += n
	if k := len(r.chunks); k > 0 && n < coalesceBelow {
		last := &r.chunks[k-1]
		if last.buf != nil && cap(last.Payload)-len(last.Payload) >= n {
			last.Payload = append(last.Payload, f.Payload...)
			f.Release()
			r.wake()
			return nil
		}
	}
	if !r.mem.take(keptBy(&f)) {
		r.size -= n
		f.Release()
		return errMemory
	}
	r.chunks = append(r.chunks, f)
	r.wake()
	return nil
}

// finish marks the peer's FIN: pop returns eof after the buffered data.
func (r *recvBuf) finish() {
	r.mu.Lock()
	r.eof = true
	r.mu.Unlock()
	r.wake()
}

// finished says whether the peer's FIN has arrived.
func (r *recvBuf) finished() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.eof
}

// downBatch bounds how many buffered chunks one vectored write takes.
const downBatch = 16

// popBatch appends up to cap(dst) buffered frames to dst, waiting for at
// least one; eof is true once the data before FIN is all out (then dst is
// empty); ok=false if the stream was aborted.
func (r *recvBuf) popBatch(aborted <-chan struct{}, dst []Frame) ([]Frame, bool, bool) {
	f, eof, ok := r.pop(aborted)
	if !ok || eof {
		return dst, eof, ok
	}
	dst = append(dst, f)
	r.mu.Lock()
	k := min(len(r.chunks), cap(dst)-len(dst))
	for i := 0; i < k; i++ {
		dst = append(dst, r.chunks[i])
		r.size -= len(r.chunks[i].Payload)
		r.mem.give(keptBy(&r.chunks[i]))
		r.chunks[i] = Frame{}
	}
	r.chunks = r.chunks[k:]
	if len(r.chunks) == 0 {
		r.chunks = r.first[:0]
	}
	r.mu.Unlock()
	if k > 0 {
		r.signalSpace()
	}
	return dst, false, true
}

// pop returns the next frame, or eof once the data before FIN is out, or
// ok=false if the stream was aborted.
func (r *recvBuf) pop(aborted <-chan struct{}) (f Frame, eof, ok bool) {
	for {
		select {
		case <-aborted:
			return Frame{}, false, false
		default:
		}
		r.mu.Lock()
		if len(r.chunks) > 0 {
			f = r.chunks[0]
			r.chunks[0] = Frame{}
			r.chunks = r.chunks[1:]
			if len(r.chunks) == 0 {
				r.chunks = r.first[:0] // a grown array goes; the small one stays
			}
			r.size -= len(f.Payload)
			r.mem.give(keptBy(&f))
			r.mu.Unlock()
			r.signalSpace()
			return f, false, true
		}
		eof = r.eof
		r.mu.Unlock()
		if eof {
			return Frame{}, true, true
		}
		select {
		case <-r.notify:
		case <-aborted:
			return Frame{}, false, false
		}
	}
}

// drain releases everything still buffered (after the stream ended).
func (r *recvBuf) drain() {
	r.mu.Lock()
	for i := range r.chunks {
		r.mem.give(keptBy(&r.chunks[i]))
		r.chunks[i].Release()
	}
	r.chunks = nil
	r.size = 0
	r.mu.Unlock()
}
