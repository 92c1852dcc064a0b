package wire

import (
	"encoding/binary"
	"fmt"
)

// Backend control channel (SPEC-v2.md §7c). A CONTROL frame (type 10, on
// stream 0) carries one typed message from a backend to its counterpart,
// sealed like every other record:
//
//	offset  size  field
//	0       1     message type   ControlType
//	1       n     body           by type, below; n ≤ ControlMaxLen − 1
//
//	type  name        body                                   size
//	1     LANES       count (u8) | index (u8)                2
//	2     SEQ         next numbered frame on this lane (u64) 8
//	3     HEALTH      up (u8) | count (u8) | replaced (u32)  6
//	4     GOING_AWAY  index (u8) | reason (u8)               2
//
// Integers are big-endian. CONTROL frames are not numbered (§7b): they
// belong to one backend connection, as ACK does. A message of an unknown
// type is ignored (forward compatibility); a known type with a body of
// another size is a protocol error.

// FrameControl is the backend control frame (its constant lives here with
// the messages it carries).
const FrameControl FrameType = 10

// ControlMaxLen bounds a CONTROL frame's payload.
const ControlMaxLen = 64

// MaxLanes is the largest lane count a LANES message may announce.
const MaxLanes = 16

// ControlType says what a control message is.
type ControlType uint8

// Control message types.
const (
	// ControlLanes: "this connection is lane Index of a set of Count".
	// The client sends it first on every lane; the server answers on the
	// same lane with the count it accepts.
	ControlLanes ControlType = 1
	// ControlSeq: the next numbered frame on this connection is number
	// Seq of the session; the ones after it count up from there.
	ControlSeq ControlType = 2
	// ControlHealth reports the sender's lane set: lanes Up now of the
	// agreed Count, lanes Replaced so far. Informational.
	ControlHealth ControlType = 3
	// ControlGoingAway: the sender sends no more numbered frames on this
	// connection (lane Index) and will close it; Reason says why.
	ControlGoingAway ControlType = 4
)

// Reasons of a GOING_AWAY message.
const (
	GoingAwayRotation uint8 = 0 // the lane is being replaced
	GoingAwayShutdown uint8 = 1 // the sender is shutting down
)

var controlNames = [...]string{"", "LANES", "SEQ", "HEALTH", "GOING_AWAY"}

func (t ControlType) String() string {
	if t > 0 && int(t) < len(controlNames) {
		return controlNames[t]
	}
	return fmt.Sprintf("CONTROL(%d)", uint8(t))
}

// controlBodyLen is the body size of each known message type.
var controlBodyLen = [...]int{ControlLanes: 2, ControlSeq: 8, ControlHealth: 6, ControlGoingAway: 2}

// Control is one control message; the fields its type does not use are 0.
type Control struct {
	Type     ControlType
	Count    uint8  // LANES, HEALTH
	Index    uint8  // LANES, GOING_AWAY
	Seq      uint64 // SEQ
	Up       uint8  // HEALTH
	Replaced uint32 // HEALTH
	Reason   uint8  // GOING_AWAY
}

func (c Control) String() string {
	switch c.Type {
	case ControlLanes:
		return fmt.Sprintf("LANES count=%d index=%d", c.Count, c.Index)
	case ControlSeq:
		return fmt.Sprintf("SEQ seq=%d", c.Seq)
	case ControlHealth:
		return fmt.Sprintf("HEALTH up=%d count=%d replaced=%d", c.Up, c.Count, c.Replaced)
	case ControlGoingAway:
		return fmt.Sprintf("GOING_AWAY index=%d reason=%d", c.Index, c.Reason)
	}
	return c.Type.String()
}

// AppendControl appends the CONTROL frame payload of c to dst. c.Type
// must be a known type.
func AppendControl(dst []byte, c Control) []byte {
	dst = append(dst, byte(c.Type))
	switch c.Type {
	case ControlLanes:
		dst = append(dst, c.Count, c.Index)
	case ControlSeq:
		dst = binary.BigEndian.AppendUint64(dst, c.Seq)
	case ControlHealth:
		dst = append(dst, c.Up, c.Count)
		dst = binary.BigEndian.AppendUint32(dst, c.Replaced)
	case ControlGoingAway:
		dst = append(dst, c.Index, c.Reason)
	}
	return dst
}

// ControlFrame is the CONTROL frame carrying c.
func ControlFrame(c Control) Frame {
	return Frame{Type: FrameControl, Payload: AppendControl(make([]byte, 0, 1+8), c)}
}

// ParseControl decodes a CONTROL frame's payload (ParseFrame has checked
// its size). known is false for a message type this version does not
// know, which the receiver ignores. A LANES message with a count of 0 or
// above MaxLanes, or an index not below its count, is ErrBadFrame.
func ParseControl(p []byte) (c Control, known bool, err error) {
	if len(p) < 1 {
		return c, false, fmt.Errorf("%w: empty control message", ErrBadFrame)
	}
	c.Type = ControlType(p[0])
	if c.Type == 0 || int(c.Type) >= len(controlBodyLen) {
		return Control{Type: c.Type}, false, nil
	}
	b := p[1:]
	if len(b) != controlBodyLen[c.Type] {
		return Control{}, false, fmt.Errorf("%w: %s with a %d-byte body", ErrBadFrame, c.Type, len(b))
	}
	switch c.Type {
	case ControlLanes:
		c.Count, c.Index = b[0], b[1]
		if c.Count == 0 || c.Count > MaxLanes || c.Index >= c.Count {
			return Control{}, false, fmt.Errorf("%w: LANES count %d index %d", ErrBadFrame, c.Count, c.Index)
		}
	case ControlSeq:
		c.Seq = binary.BigEndian.Uint64(b)
	case ControlHealth:
		c.Up, c.Count, c.Replaced = b[0], b[1], binary.BigEndian.Uint32(b[2:])
	case ControlGoingAway:
		c.Index, c.Reason = b[0], b[1]
	}
	return c, true, nil
}
