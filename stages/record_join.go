package stages

import (
	"fmt"

	"usocks/wire"
)

// joiner puts a resumable session's split data frames together again
// (SPEC-v2.md §7b): a STREAM frame with FlagMORE is a piece of one
// numbered frame that the defence stage cut into cells, continued by the
// next STREAM frame. The decrypt stage of a link holds the pieces, hands
// on the joined frame, and counts it once. Pieces of a frame that a lost
// link cut short are dropped with the link: the peer resends the whole
// frame from its buffer.
type joiner struct {
	on    bool
	first wire.Frame // the first piece's header
	buf   *payloadBuf
	n     int
}

// maxJoined bounds a joined payload: what a sender puts in one frame.
const maxJoined = 16 << 10

// errSplit is a split frame that does not go on as SPEC-v2.md §7b says.
var errSplit = fmt.Errorf("%w: split frame interrupted or too long", ErrProtocol)

// add takes one opened frame (its payload in owner) and returns the frame
// to hand on, if any.
func (j *joiner) add(wf wire.Frame, owner *payloadBuf) (Frame, bool, error) {
	more := wf.Type == wire.FrameStream && wf.Flags.Has(wire.FlagMORE)
	if !j.on && !more {
		return Frame{Frame: wf, buf: owner}, true, nil
	}
	defer putBuf(owner)
	if wf.Type != wire.FrameStream || !wf.Flags.Has(wire.FlagDAT) || (j.on && wf.Stream != j.first.Stream) ||
		j.n+len(wf.Payload) > maxJoined {
		return Frame{}, false, errSplit
	}
	if !j.on {
		j.on, j.first, j.n = true, wf, 0
		j.buf = getBuf(payloadBufSize)
	}
	j.n += copy(j.buf.B[j.n:], wf.Payload)
	if more {
		return Frame{}, false, nil
	}
	f := Frame{Frame: wire.Frame{Type: wire.FrameStream, Stream: wf.Stream, Payload: j.buf.B[:j.n],
		Flags: (j.first.Flags&wire.FlagSYN | wf.Flags) &^ wire.FlagMORE}, buf: j.buf}
	j.on, j.buf, j.n = false, nil, 0
	return f, true, nil
}

// release drops a frame cut short (the link ended).
func (j *joiner) release() {
	putBuf(j.buf)
	j.on, j.buf, j.n = false, nil, 0
}
