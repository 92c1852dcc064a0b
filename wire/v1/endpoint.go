package v1

import (
	"errors"
	"strconv"
)

// Errors of the tunnel state machine. Compare with errors.Is.
var (
	// ErrUnknownID: a message without SYN (or with RST) for an id that
	// was never opened (the original raised KeyError). Spec §4.5 rule 7:
	// ignore the message (or reset the stream); nothing was changed.
	ErrUnknownID = errors.New("usocks/v1: message for an unknown connection id")
	// ErrBadState: a local operation that the stream's state does not
	// allow, such as sending data on a stream that is not open.
	ErrBadState = errors.New("usocks/v1: operation not allowed in this stream state")
)

// State is the state of one connection id on one side of a tunnel
// (spec §4.3).
type State uint8

// The stream states.
const (
	// StateUnknown: the id has never been used on this tunnel.
	StateUnknown State = iota
	// StateNew: the client has accepted the stream but sent nothing.
	StateNew
	// StateConnected: SYN sent or received.
	StateConnected
	// StateClosing: we sent FIN and wait for the answer.
	StateClosing
	// StateResetting: we sent RST and wait for the answer.
	StateResetting
	// StateClosed: finished; the id may be reused.
	StateClosed
)

// String returns the state's name as used in tunnel.json ("unknown",
// "new", "connected", "closing", "resetting", "closed").
func (s State) String() string {
	switch s {
	case StateUnknown:
		return "unknown"
	case StateNew:
		return "new"
	case StateConnected:
		return "connected"
	case StateClosing:
		return "closing"
	case StateResetting:
		return "resetting"
	case StateClosed:
		return "closed"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// active reports whether the id is in use (not unknown and not closed).
func (s State) active() bool { return s != StateUnknown && s != StateClosed }

// Result is what Endpoint.Receive asks the caller to do.
type Result struct {
	// Deliver is the message for the application when Deliver.Flags is
	// not zero. The application acts on SYN first (open; on the server,
	// reset any existing frontend of that id first), then DAT (write
	// Payload out), then FIN (close the local socket), or on RST alone
	// (reset the local socket). Flags keep reserved bits as received.
	Deliver Message
	// Reply must be sent back at once when Reply.Flags is not zero: the
	// automatic FIN or RST answer.
	Reply Message
	// Released is true when the id became closed and free by this
	// message; the client then recycles it (IDAllocator.Recycle).
	Released bool
}

// Endpoint is the pure per-tunnel stream state machine of one side
// (spec §4.3 to §4.5). It tracks the state of every connection id,
// turns local events into the messages to send, and applies incoming
// messages. The zero value is ready to use; it is not safe for
// concurrent use.
//
// Like the original, it remembers closed ids (at most 65536 entries),
// so that late messages for a closed id are silently dropped rather
// than reported as unknown.
type Endpoint struct {
	states map[uint16]State
}

// State returns the state of id.
func (e *Endpoint) State(id uint16) State { return e.states[id] }

func (e *Endpoint) set(id uint16, s State) {
	if e.states == nil {
		e.states = make(map[uint16]State)
	}
	e.states[id] = s
}

// Open records a stream the client has just accepted under id (state
// new). Nothing is sent yet. It fails with ErrBadState if id is in use.
func (e *Endpoint) Open(id uint16) error {
	if e.State(id).active() {
		return ErrBadState
	}
	e.set(id, StateNew)
	return nil
}

// SendData returns the message carrying payload on stream id: SYN|DAT
// for a new stream, which becomes connected, and DAT for a connected
// one. An empty payload sends nothing (the returned Message has zero
// Flags), as in the original. Other states give ErrBadState.
func (e *Endpoint) SendData(id uint16, payload []byte) (Message, error) {
	st := e.State(id)
	if st != StateNew && st != StateConnected {
		return Message{}, ErrBadState
	}
	if len(payload) == 0 {
		return Message{}, nil
	}
	f := DAT
	if st == StateNew {
		f |= SYN
		e.set(id, StateConnected)
	}
	return Message{Flags: f, ID: id, Payload: payload}, nil
}

// SendSYN returns a bare SYN for a new stream, which becomes connected.
// The original never sends it (its first data carries SYN) but accepts
// it; it lets a client open the target before the app speaks. Other
// states give ErrBadState.
func (e *Endpoint) SendSYN(id uint16) (Message, error) {
	if e.State(id) != StateNew {
		return Message{}, ErrBadState
	}
	e.set(id, StateConnected)
	return Message{Flags: SYN, ID: id}, nil
}

// SendFIN handles the local end of stream id. A connected stream sends
// FIN and becomes closing. A new stream sends nothing and becomes closed
// at once (the original leaked such an id; the caller may recycle it).
// A stream already closing, resetting or closed sends nothing and is
// unchanged. An unknown id gives ErrUnknownID. A zero Flags in the
// returned Message means nothing is to be sent.
func (e *Endpoint) SendFIN(id uint16) (Message, error) {
	return e.localClose(id, FIN, StateClosing)
}

// SendRST handles a local reset of stream id. A connected stream sends
// RST and becomes resetting. A new stream sends nothing and becomes
// closed. Other known states send nothing and are unchanged; an unknown
// id gives ErrUnknownID.
func (e *Endpoint) SendRST(id uint16) (Message, error) {
	return e.localClose(id, RST, StateResetting)
}

func (e *Endpoint) localClose(id uint16, f Flags, next State) (Message, error) {
	switch e.State(id) {
	case StateUnknown:
		return Message{}, ErrUnknownID
	case StateNew:
		e.set(id, StateClosed)
	case StateConnected:
		e.set(id, next)
		return Message{Flags: f, ID: id}, nil
	}
	return Message{}, nil
}

// Receive applies one incoming message, following spec §4.5 and the
// original's exact behaviour (tunnel.json receiver_semantics):
//
//  1. Unknown id without SYN, or with RST: ErrUnknownID, nothing changes.
//  2. RST: reply RST and deliver RST if the stream was connected; the
//     stream becomes closed. Other flags and the payload are ignored.
//  3. SYN: the stream becomes connected.
//  4. Not connected: DAT is cleared (late data after our FIN/RST).
//  5. FIN: if connected, reply FIN; the stream becomes closed. If it was
//     not connected the FIN answers ours and the message is swallowed.
//  6. Deliver what is left if it has SYN, DAT or FIN.
//
// The version byte is checked by ParseMessage, not here.
func (e *Endpoint) Receive(m Message) (Result, error) {
	id := m.ID
	prev := e.State(id)
	f := m.Flags
	if prev == StateUnknown && (f&RST != 0 || f&SYN == 0) {
		return Result{}, ErrUnknownID
	}
	var r Result
	if f&RST != 0 {
		if prev == StateConnected {
			r.Reply = Message{Flags: RST, ID: id}
			r.Deliver = Message{Flags: RST, ID: id}
		}
		r.Released = prev != StateClosed
		e.set(id, StateClosed)
		return r, nil
	}
	st := prev
	if f&SYN != 0 {
		st = StateConnected
	}
	if st != StateConnected {
		f &^= DAT
	}
	if f&FIN != 0 {
		r.Released = st != StateClosed
		if st != StateConnected {
			e.set(id, StateClosed)
			return r, nil
		}
		r.Reply = Message{Flags: FIN, ID: id}
		st = StateClosed
	}
	e.set(id, st)
	if f&FlagsMask != 0 {
		r.Deliver = Message{Flags: f, ID: id}
		if f&DAT != 0 {
			r.Deliver.Payload = m.Payload
		}
	}
	return r, nil
}
