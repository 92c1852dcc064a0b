package stages

import "sync/atomic"

// Receive memory: what a peer can make this side keep. Flow control
// counts payload bytes; the memory a received frame keeps is its buffer,
// which the decrypt stage sizes to the payload (compact), never to the
// record body, so padding pins nothing. On top of the per-stream window,
// a MemBudget bounds what all the streams of a scope keep together: a
// session, a user, the whole process (SPEC-v2.md §6c).

// MemBudget bounds the bytes kept in receive buffers of one scope and,
// through Parent, of every scope above it. The zero value is unlimited; a
// nil *MemBudget is unlimited and charges nothing.
type MemBudget struct {
	// Parent, if set, is charged as well (session → user → global).
	Parent *MemBudget
	limit  atomic.Int64 // the most this scope keeps at once (0: no limit of its own)
	used   atomic.Int64
}

// NewMemBudget returns a budget of limit bytes under parent.
func NewMemBudget(limit int64, parent *MemBudget) *MemBudget {
	b := &MemBudget{Parent: parent}
	b.limit.Store(limit)
	return b
}

// SetLimit changes the limit (a config reload). What is kept already
// stays; a lower limit refuses new data until enough is given back.
func (b *MemBudget) SetLimit(limit int64) { b.limit.Store(limit) }

// Used is what the scope keeps now.
func (b *MemBudget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// take charges n bytes to b and its parents, all or nothing.
func (b *MemBudget) take(n int64) bool {
	for s := b; s != nil; s = s.Parent {
		if u, l := s.used.Add(n), s.limit.Load(); l > 0 && u > l {
			for r := b; r != s.Parent; r = r.Parent {
				r.used.Add(-n)
			}
			return false
		}
	}
	return true
}

// give returns n bytes taken before.
func (b *MemBudget) give(n int64) {
	for s := b; s != nil; s = s.Parent {
		s.used.Add(-n)
	}
}

// keptBy is the memory a buffered frame holds: its pooled buffer's class,
// or the capacity of a payload that has no pooled buffer.
func keptBy(f *Frame) int64 {
	if f.buf != nil {
		return int64(len(f.buf.B))
	}
	return int64(cap(f.Payload))
}

// compact makes a received frame keep no more than its payload needs: a
// payload that sits in a much larger buffer (a record body with padding)
// is copied into a buffer of its own size class, and the large one goes
// back to its pool (or to the collector). The rule: a frame keeps at most
// max(smallBufSize, 2 × payload) bytes, plus the big class for payloads
// between smallBufSize and payloadBufSize/2.
func compact(f Frame) Frame {
	n := len(f.Payload)
	if n == 0 {
		f.Release()
		return f
	}
	kept := keptBy(&f)
	if kept <= smallBufSize || kept <= 2*int64(n) {
		return f
	}
	var nb *payloadBuf
	var p []byte
	switch {
	case n <= smallBufSize || n <= payloadBufSize && kept > payloadBufSize:
		nb = getBuf(n)
		p = nb.B[:n]
	default:
		p = make([]byte, n)
	}
	copy(p, f.Payload)
	putBuf(f.buf)
	f.buf, f.Payload = nb, p
	return f
}
