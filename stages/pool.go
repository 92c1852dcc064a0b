package stages

import "sync"

// Payload buffers come in two size classes, so that a stream sending small
// messages (keystrokes, requests, acknowledgements) does not pin a whole
// frame's worth of memory per message.
const (
	// PayloadBufSize is the large class: the largest record body a v2
	// sender produces, with room for padding.
	PayloadBufSize = 20 * 1024
	// SmallBufSize is the small class.
	SmallBufSize = 2048
)

// Buf is a pooled payload buffer. Frames that carry one say so in their
// buf field; the stage that consumes the frame last releases it: encrypt
// after sealing, a stream's writer after writing to its socket.
type Buf struct {
	B     []byte // len == cap == the class size
	small bool
}

var (
	bigPool   = sync.Pool{New: func() any { return &Buf{B: make([]byte, PayloadBufSize)} }}
	smallPool = sync.Pool{New: func() any { return &Buf{B: make([]byte, SmallBufSize), small: true} }}
)

// getBuf returns a buffer of at least n bytes (n ≤ PayloadBufSize).
func getBuf(n int) *Buf {
	if n <= SmallBufSize {
		return smallPool.Get().(*Buf)
	}
	return bigPool.Get().(*Buf)
}

// putBuf returns b to its pool; nil is ignored.
func putBuf(b *Buf) {
	switch {
	case b == nil:
	case b.small:
		smallPool.Put(b)
	default:
		bigPool.Put(b)
	}
}

// ChunkBuf is a pooled buffer for ciphertext read from the backend.
type ChunkBuf [ChunkSize]byte

var chunkPool = sync.Pool{New: func() any { return new(ChunkBuf) }}
