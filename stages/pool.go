package stages

import (
	"sync"
	"sync/atomic"
)

// Payload buffers come in two size classes, so that a stream sending small
// messages (keystrokes, requests, acknowledgements) does not pin a whole
// frame's worth of memory per message.
const (
	// payloadBufSize is the large class: the largest record body a v2
	// sender produces, with room for padding.
	payloadBufSize = 20 * 1024
	// smallBufSize is the small class.
	smallBufSize = 2048
)

// payloadBuf is a pooled payload buffer. Frames that carry one say so in their
// buf field; the stage that consumes the frame last releases it: encrypt
// after sealing, a stream's writer after writing to its socket.
type payloadBuf struct {
	B     []byte // len == cap == the class size
	small bool
	// pooled is set while the buffer sits in its pool: a second release
	// without a get in between is caught (see putBuf).
	pooled atomic.Bool
}

// doubleRelease is called when a buffer already in its pool is released
// again. That is a bug (two frames would later share one buffer and one
// would overwrite the other's bytes): the buffer is then not pooled a
// second time, and DoubleReleases counts it. Tests make it panic
// (main_test.go) or fail the run (the runner's).
var doubleRelease = func(*payloadBuf) { DoubleReleases.Add(1) }

// DoubleReleases counts payload buffers released twice (bugs caught
// before they could corrupt data).
var DoubleReleases atomic.Int64

var (
	bigPool   = sync.Pool{New: func() any { return &payloadBuf{B: make([]byte, payloadBufSize)} }}
	smallPool = sync.Pool{New: func() any { return &payloadBuf{B: make([]byte, smallBufSize), small: true} }}
)

// getBuf returns a buffer of at least n bytes (n ≤ payloadBufSize).
func getBuf(n int) *payloadBuf {
	var b *payloadBuf
	if n <= smallBufSize {
		b = smallPool.Get().(*payloadBuf)
	} else {
		b = bigPool.Get().(*payloadBuf)
	}
	b.pooled.Store(false)
	if w := watch.Load(); w != nil {
		w.got(b)
	}
	return b
}

// putBuf returns b to its pool; nil is ignored.
func putBuf(b *payloadBuf) {
	if w := watch.Load(); w != nil && b != nil {
		w.put(b) // poisoned and quarantined, never reused (pool_ledger.go)
		return
	}
	switch {
	case b == nil:
	case b.pooled.Swap(true):
		doubleRelease(b)
	case b.small:
		smallPool.Put(b)
	default:
		bigPool.Put(b)
	}
}

// chunkBuf is a pooled buffer for ciphertext read from the backend.
type chunkBuf [chunkSize]byte

var chunkPool = sync.Pool{New: func() any { return new(chunkBuf) }}
