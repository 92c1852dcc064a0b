package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Tunnel frames of protocol v2. Every record body is exactly one frame:
//
//	offset  size  field
//	0       1     type     FrameType
//	1       1     flags    Flags (STREAM frames; 0 otherwise)
//	2       2     stream   stream id, big-endian (0 for session frames)
//	4       2     padLen   bytes of padding at the end, big-endian
//	6       n     payload  n = body length - 6 - padLen
//	6+n     p     padding  any bytes; the receiver ignores them
//
// See SPEC-v2.md for what each type means and the stream state machine.

// FrameHeaderLen is the size of the frame header.
const FrameHeaderLen = 6

// FrameType says what a frame is for.
type FrameType uint8

// Frame types. Session frames use stream 0.
const (
	// FrameStream carries SYN/DAT/FIN/RST for one stream; payload is data.
	FrameStream FrameType = 0
	// FrameWindow grants the peer more send credit on a stream; payload
	// is a u32 BE increment in bytes.
	FrameWindow FrameType = 1
	// FramePad is chaff: verified and discarded. Payload is empty.
	FramePad FrameType = 2
	// FrameClose announces a clean end of the backend: the sender will
	// send nothing more and close its side. Without it, EOF is insecure.
	FrameClose FrameType = 3
	// FrameReset says the sender saw an error and is tearing down now.
	FrameReset FrameType = 4
	// FramePing asks for a FramePong echoing its payload (≤ 8 bytes).
	FramePing FrameType = 5
	// FramePong answers a ping.
	FramePong FrameType = 6
	// FrameKeyUpdate rekeys the sender's direction: payload is a fresh
	// 32-byte salt; every record after this one is sealed under
	// RekeyKey(old key, salt) with the nonce counter back at 0.
	FrameKeyUpdate FrameType = 7
	// FrameDatagram carries one UDP datagram of the association opened on
	// stream `stream` (SOCKS5 UDP ASSOCIATE). Payload: the RFC 1928 UDP
	// request header (RSV RSV FRAG ATYP DST.ADDR DST.PORT) and the data. An
	// empty DATAGRAM from the server says the association is open.
	FrameDatagram FrameType = 8
	// FrameAck acknowledges numbered frames of a resumable session
	// (SPEC-v2.md §7b): payload is a u64 BE count, the numbered frames
	// the sender has received on the session so far.
	FrameAck FrameType = 9
)

var frameTypeNames = [...]string{"STREAM", "WINDOW", "PAD", "CLOSE", "RESET", "PING", "PONG", "KEYUPDATE", "DATAGRAM", "ACK", "CONTROL"}

func (t FrameType) String() string {
	if int(t) < len(frameTypeNames) {
		return frameTypeNames[t]
	}
	return fmt.Sprintf("TYPE(%d)", uint8(t))
}

// Flags are the stream flags of a FrameStream frame, as in v1.
type Flags uint8

// Stream flags.
const (
	FlagSYN Flags = 1 << 0 // open the stream
	FlagDAT Flags = 1 << 1 // payload is stream data
	FlagFIN Flags = 1 << 2 // sender has no more data (half-close)
	FlagRST Flags = 1 << 3 // abort the stream in both directions
	// FlagMORE (resumable sessions, SPEC-v2.md §7b): the DAT payload
	// continues in the next STREAM frame, and the two are one numbered
	// frame. Elsewhere it is a reserved bit, ignored.
	FlagMORE   Flags = 1 << 4
	flagsKnown       = FlagSYN | FlagDAT | FlagFIN | FlagRST | FlagMORE
)

// Has reports whether all flags in g are set.
func (f Flags) Has(g Flags) bool { return f&g == g }

func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	var parts []string
	for _, x := range []struct {
		f Flags
		s string
	}{{FlagSYN, "SYN"}, {FlagDAT, "DAT"}, {FlagFIN, "FIN"}, {FlagRST, "RST"}, {FlagMORE, "MORE"}} {
		if f.Has(x.f) {
			parts = append(parts, x.s)
		}
	}
	if r := f &^ flagsKnown; r != 0 {
		parts = append(parts, fmt.Sprintf("0x%02x", uint8(r)))
	}
	return strings.Join(parts, "|")
}

// Frame is one decoded frame. Payload aliases the buffer it was parsed from
// or handed to the encoder; who owns it is said where frames travel.
type Frame struct {
	Type    FrameType
	Flags   Flags
	Stream  uint16
	Payload []byte
}

func (f Frame) String() string {
	if f.Type == FrameStream {
		return fmt.Sprintf("%s stream=%d flags=%s len=%d", f.Type, f.Stream, f.Flags, len(f.Payload))
	}
	if f.Type == FrameAck && len(f.Payload) == AckLen {
		return fmt.Sprintf("%s count=%d", f.Type, AckCount(&f))
	}
	if f.Type == FrameControl {
		if c, known, err := ParseControl(f.Payload); err == nil && known {
			return fmt.Sprintf("%s %s", f.Type, c)
		}
	}
	if f.Type == FrameWindow && len(f.Payload) == 4 {
		return fmt.Sprintf("%s stream=%d credit=%d", f.Type, f.Stream, binary.BigEndian.Uint32(f.Payload))
	}
	return fmt.Sprintf("%s stream=%d len=%d", f.Type, f.Stream, len(f.Payload))
}

// Frame errors. They are protocol errors of an authenticated peer, so they
// end the session (they cannot come from an attacker without the key).
var (
	ErrShortFrame   = errors.New("frame shorter than its header")
	ErrBadPadding   = errors.New("frame padding longer than the frame")
	ErrUnknownFrame = errors.New("unknown frame type")
	ErrBadFrame     = errors.New("malformed frame")
)

// AppendFrame appends the frame body of f with padLen zero bytes of padding
// (padding is encrypted, so its content does not matter) to dst.
func AppendFrame(dst []byte, f *Frame, padLen int) []byte {
	dst = append(dst, byte(f.Type), byte(f.Flags), byte(f.Stream>>8), byte(f.Stream), byte(padLen>>8), byte(padLen))
	dst = append(dst, f.Payload...)
	for padLen > 0 {
		n := min(padLen, len(zeros))
		dst = append(dst, zeros[:n]...)
		padLen -= n
	}
	return dst
}

var zeros [256]byte

// ParseFrame decodes one record body. The payload aliases body.
func ParseFrame(body []byte) (f Frame, padLen int, err error) {
	if len(body) < FrameHeaderLen {
		return f, 0, ErrShortFrame
	}
	f.Type = FrameType(body[0])
	f.Flags = Flags(body[1])
	f.Stream = binary.BigEndian.Uint16(body[2:4])
	padLen = int(binary.BigEndian.Uint16(body[4:6]))
	if padLen > len(body)-FrameHeaderLen {
		return f, 0, ErrBadPadding
	}
	f.Payload = body[FrameHeaderLen : len(body)-padLen]
	if err := f.check(); err != nil {
		return Frame{}, 0, err
	}
	return f, padLen, nil
}

// check applies the per-type rules of SPEC-v2.md.
func (f *Frame) check() error {
	switch f.Type {
	case FrameStream:
		if f.Stream == 0 || f.Stream == 0xffff {
			return fmt.Errorf("%w: stream id %d", ErrBadFrame, f.Stream)
		}
		if len(f.Payload) > 0 && !f.Flags.Has(FlagDAT) && !f.Flags.Has(FlagSYN) {
			// Without DAT, only a SYN carries a payload: its target (§6e).
			return fmt.Errorf("%w: payload without DAT or SYN", ErrBadFrame)
		}
	case FrameWindow:
		if len(f.Payload) != 4 || f.Stream == 0 || f.Stream == 0xffff {
			return fmt.Errorf("%w: window frame", ErrBadFrame)
		}
	case FramePad, FrameClose, FrameReset:
		if len(f.Payload) != 0 {
			return fmt.Errorf("%w: %s with payload", ErrBadFrame, f.Type)
		}
		if f.Stream != 0 {
			return fmt.Errorf("%w: %s on stream %d", ErrBadFrame, f.Type, f.Stream)
		}
	case FrameKeyUpdate:
		if len(f.Payload) != SaltSize || f.Stream != 0 {
			return fmt.Errorf("%w: key update", ErrBadFrame)
		}
	case FrameDatagram:
		if f.Stream == 0 || f.Stream == 0xffff {
			return fmt.Errorf("%w: datagram on stream %d", ErrBadFrame, f.Stream)
		}
	case FrameAck:
		if len(f.Payload) != AckLen || f.Stream != 0 {
			return fmt.Errorf("%w: ack", ErrBadFrame)
		}
	case FrameControl:
		if len(f.Payload) == 0 || len(f.Payload) > ControlMaxLen || f.Stream != 0 {
			return fmt.Errorf("%w: control frame", ErrBadFrame)
		}
	case FramePing, FramePong:
		if len(f.Payload) > 8 || f.Stream != 0 {
			return fmt.Errorf("%w: %s payload or stream", ErrBadFrame, f.Type)
		}
	default:
		return fmt.Errorf("%w: %s", ErrUnknownFrame, f.Type)
	}
	return nil
}

// WindowPayload encodes a credit increment for a FrameWindow.
func WindowPayload(dst []byte, credit uint32) []byte {
	return binary.BigEndian.AppendUint32(dst, credit)
}

// WindowCredit decodes the increment of a FrameWindow.
func WindowCredit(f *Frame) uint32 { return binary.BigEndian.Uint32(f.Payload) }
