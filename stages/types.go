package stages

import (
	"sync/atomic"

	"usocks/wire"
)

// Chunk is ciphertext as read from the backend: backend reader → decrypt.
// B aliases buf, which decrypt releases after copying B.
type Chunk struct {
	B   []byte
	buf *chunkBuf
}

// Release returns the chunk's buffer to its pool.
func (c *Chunk) Release() {
	if c.buf != nil {
		chunkPool.Put(c.buf)
		c.buf = nil
	}
	c.B = nil
}

// Frame is a tunnel frame travelling between stages: decrypt → demux →
// stream actor, and stream actor → mux → encrypt. Payload may alias buf;
// whoever consumes the frame last calls Release.
type Frame struct {
	wire.Frame
	buf *payloadBuf
	// padLen is padding the sender of the frame asks for (chaff), on top
	// of what the encrypt stage's policy adds.
	padLen int
}

// Release returns the frame's payload buffer to the pool.
func (f *Frame) Release() {
	putBuf(f.buf)
	f.buf = nil
	f.Payload = nil
}

// Batch is what the mux hands to encrypt: frames to seal in order.
type Batch []Frame

// Sealed is what encrypt hands to the backend writer: whole records, ready
// to write in one call.
type Sealed struct {
	B []byte
}

// Stats counts what happened in a session; safe to read concurrently.
type Stats struct {
	StreamsOpened, StreamsReset, ControlDropped atomic.Int64
	// ChaffReceived counts dummy (PAD) records received and discarded.
	ChaffReceived atomic.Int64
	// Rekeys counts keys replaced in our sending direction (v2).
	Rekeys atomic.Int64
	// DefenceData and DefenceDummy are the wire bytes the defence stage
	// sent as data and as dummies (v2, policy not off).
	DefenceData, DefenceDummy atomic.Int64
	// DefencePolicy is the policy of the newest session (a wire.DefencePolicy).
	DefencePolicy atomic.Int32
	// GraceCuts counts sessions cut because, after their clean end began,
	// the peer's CLOSE and EOF did not come within the grace time.
	GraceCuts atomic.Int64
}
