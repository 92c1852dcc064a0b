package wire

import (
	"encoding/binary"
	"fmt"
)

// Resumable sessions (SPEC-v2.md §7b). A session outlives its backend
// connections: each direction counts the numbered frames it sends (every
// frame but ACK, PAD and KEYUPDATE), the receiver acknowledges the count
// with ACK frames, and a new connection resumes the session with the
// resume extension in both hellos.
//
//	client hello, ExtResume:  session id (16) | received (u64 BE)
//	server hello, ExtResume:  status (u8)     | received (u64 BE)
//	ACK frame payload:        received (u64 BE)
//
// "received" is the count of numbered frames the sender of the value has
// received on the session, over all its connections.

// ExtResume is the resume extension (type 3).
const ExtResume ExtType = 3

// ExtLanes is the lanes extension (type 4, SPEC-v2.md §7d): one byte, a
// lane count 1..MaxLanes. A client that runs a session over several
// connections sends it beside ExtResume in every hello; a server that
// runs lanes answers with the count it agrees to (at most the client's).
const ExtLanes ExtType = 4

// Sizes of the resume values.
const (
	// SessionIDSize is the size of a session id.
	SessionIDSize = 16
	// ClientResumeLen is the value of the client's resume extension.
	ClientResumeLen = SessionIDSize + 8
	// ServerResumeLen is the value of the server's resume extension.
	ServerResumeLen = 1 + 8
	// AckLen is the payload of an ACK frame.
	AckLen = 8
)

// SessionID names a resumable session; the client draws it at random.
type SessionID [SessionIDSize]byte

// ResumeStatus is the server's answer to a resume extension.
type ResumeStatus uint8

// Resume statuses.
const (
	// ResumeOK: the session continues on this connection.
	ResumeOK ResumeStatus = 0
	// ResumeNew: the server held no session under the id; a new one
	// starts on this connection under it.
	ResumeNew ResumeStatus = 1
	// ResumeLost: the server held the session but could not resume it
	// (the counts do not fit, or it was ending); it has ended it, and a
	// new one starts on this connection under the id.
	ResumeLost ResumeStatus = 2
)

func (s ResumeStatus) String() string {
	switch s {
	case ResumeOK:
		return "resumed"
	case ResumeNew:
		return "new"
	case ResumeLost:
		return "lost"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// ClientResume is the client's resume extension.
type ClientResume struct {
	ID       SessionID
	Received uint64
	// Lanes is the lane count the client asks for (ExtLanes; 0: none).
	Lanes uint8
}

// ServerResume is the server's resume extension.
type ServerResume struct {
	Status   ResumeStatus
	Received uint64
	// Lanes is the lane count the server agrees to (ExtLanes; 0: none).
	Lanes uint8
}

// Ext encodes r as a handshake extension.
func (r ClientResume) Ext() Extension {
	v := make([]byte, 0, ClientResumeLen)
	v = append(v, r.ID[:]...)
	return Extension{Type: ExtResume, Value: binary.BigEndian.AppendUint64(v, r.Received)}
}

// Ext encodes r as a handshake extension.
func (r ServerResume) Ext() Extension {
	v := make([]byte, 0, ServerResumeLen)
	v = append(v, byte(r.Status))
	return Extension{Type: ExtResume, Value: binary.BigEndian.AppendUint64(v, r.Received)}
}

// Exts encodes r as the hello's extensions: ExtResume, and ExtLanes if
// r.Lanes is set.
func (r ClientResume) Exts() Extensions { return withLanes(r.Ext(), r.Lanes) }

// Exts encodes r as the hello's extensions, as ClientResume.Exts.
func (r ServerResume) Exts() Extensions { return withLanes(r.Ext(), r.Lanes) }

func withLanes(e Extension, lanes uint8) Extensions {
	if lanes == 0 {
		return Extensions{e}
	}
	return Extensions{e, {Type: ExtLanes, Value: []byte{lanes}}}
}

// lanesOf reads the lanes extension (0: none).
func lanesOf(e Extensions) (uint8, error) {
	v, ok := e.Get(ExtLanes)
	if !ok {
		return 0, nil
	}
	if len(v) != 1 || v[0] == 0 || v[0] > MaxLanes {
		return 0, ErrHandshake
	}
	return v[0], nil
}

// ClientResumeOf reads a client hello's resume extension. ok is false when
// there is none (a client without resumption); a malformed one is
// ErrHandshake.
func ClientResumeOf(e Extensions) (r ClientResume, ok bool, err error) {
	v, ok := e.Get(ExtResume)
	if !ok {
		return r, false, nil
	}
	if len(v) != ClientResumeLen {
		return r, false, ErrHandshake
	}
	copy(r.ID[:], v)
	r.Received = binary.BigEndian.Uint64(v[SessionIDSize:])
	if r.Lanes, err = lanesOf(e); err != nil {
		return ClientResume{}, false, err
	}
	return r, true, nil
}

// ServerResumeOf reads a server hello's resume extension. ok is false when
// there is none (a server without resumption); a malformed one, or an
// unknown status, is ErrHandshake.
func ServerResumeOf(e Extensions) (r ServerResume, ok bool, err error) {
	v, ok := e.Get(ExtResume)
	if !ok {
		return r, false, nil
	}
	if len(v) != ServerResumeLen || ResumeStatus(v[0]) > ResumeLost {
		return r, false, ErrHandshake
	}
	lanes, err := lanesOf(e)
	if err != nil {
		return r, false, err
	}
	return ServerResume{Status: ResumeStatus(v[0]), Received: binary.BigEndian.Uint64(v[1:]), Lanes: lanes}, true, nil
}

// AckPayload appends the payload of an ACK frame for count.
func AckPayload(dst []byte, count uint64) []byte { return binary.BigEndian.AppendUint64(dst, count) }

// AckCount decodes the count of an ACK frame (checked by ParseFrame).
func AckCount(f *Frame) uint64 { return binary.BigEndian.Uint64(f.Payload) }
