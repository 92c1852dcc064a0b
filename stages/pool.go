package stages

import "sync"

// PayloadBufSize is the size of a pooled frame buffer: the largest record
// body a v2 sender produces, with room for padding.
const PayloadBufSize = 20 * 1024

// Buf is a pooled payload buffer. Frames that carry one say so in their
// buf field; the stage that consumes the frame last releases it: encrypt
// after sealing, a stream's writer after writing to its socket.
type Buf [PayloadBufSize]byte

var bufPool = sync.Pool{New: func() any { return new(Buf) }}

// getBuf returns a buffer from the pool.
func getBuf() *Buf { return bufPool.Get().(*Buf) }

// putBuf returns b to the pool; nil is ignored.
func putBuf(b *Buf) {
	if b != nil {
		bufPool.Put(b)
	}
}

// ChunkBuf is a pooled buffer for ciphertext read from the backend.
type ChunkBuf [ChunkSize]byte

var chunkPool = sync.Pool{New: func() any { return new(ChunkBuf) }}
