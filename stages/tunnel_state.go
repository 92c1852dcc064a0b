package stages

import (
	"net"

	"usocks/wire"
)

// Stream states (SPEC-v2.md §6c). The state is the stream's truth: it
// changes only in transition, which applies the table in next, and reset
// and closed are final, so no late event (an open that completes, a FIN
// that was already queued) can undo a reset.
type streamState int8

const (
	stateOpening   streamState = iota // client: SYN queued; server: the frontend connects the target
	stateOpen                         // data both ways
	stateLocalFIN                     // we sent FIN, peer may still send
	stateRemoteFIN                    // peer sent FIN, we may still send
	stateClosed                       // both FINs; finished
	stateReset                        // RST sent or received, or the stream failed; finished
)

func (s streamState) String() string {
	return [...]string{"opening", "open", "local-fin", "remote-fin", "closed", "reset"}[s]
}

// streamEvent is what moves a stream from one state to another.
type streamEvent int8

const (
	evOpened  streamEvent = iota // the local socket is ready: the pumps start
	evFINSent                    // local EOF: our FIN is queued
	evFINRecv                    // the peer's FIN reached the local socket
	evReset                      // RST sent or received, a local failure, or the session ends
)

func (e streamEvent) String() string {
	return [...]string{"opened", "fin-sent", "fin-received", "reset"}[e]
}

// next is the stream state table: the state ev leads to from st, and
// whether ev applies in st at all (false: st stays, ev is ignored).
func next(st streamState, ev streamEvent) (streamState, bool) {
	switch {
	case st == stateClosed || st == stateReset:
		return st, false
	case ev == evReset:
		return stateReset, true
	case st == stateOpening && ev == evOpened:
		return stateOpen, true
	case st == stateOpen && ev == evFINSent:
		return stateLocalFIN, true
	case st == stateOpen && ev == evFINRecv:
		return stateRemoteFIN, true
	case st == stateLocalFIN && ev == evFINRecv, st == stateRemoteFIN && ev == evFINSent:
		return stateClosed, true
	}
	return st, false
}

// currentState is the stream's state now (for the demux's rules, logs and
// tests; it may change right after).
func (s *stream) currentState() streamState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// transition is the one place a stream changes state: it applies ev by
// the table in next and, on entering reset, wakes and stops everything
// that works on the stream (the pumps, a frontend reading its request)
// and resets the local socket (SO_LINGER 0, so the app or target sees
// RST, not a clean EOF). sendRST on entering reset tells the peer. It
// reports whether ev applied.
func (s *stream) transition(ev streamEvent, sendRST bool) bool {
	s.mu.Lock()
	from := s.state
	to, ok := next(from, ev)
	if !ok {
		s.mu.Unlock()
		return false
	}
	s.state = to
	var reset net.Conn
	if to == stateReset {
		close(s.aborted)
		if s.conn != nil && !s.connDone {
			reset = s.conn
		}
		if sendRST && s.legacy {
			s.replyRST = true
		}
	}
	s.mu.Unlock()
	if to == stateReset {
		if sendRST && !s.legacy {
			s.sendRST()
		}
		s.recv.wake()
		if reset != nil {
			// Resetting the socket is what unblocks a pump in Read or Write.
			resetConn(reset)
		}
	}
	return true
}

// endWithSession is the demux's call when the session's end starts: a
// stream whose receive side is complete (the peer's FIN arrived) but not
// yet delivered goes on until down has written it all, then ends (down
// resets it if its own side was still open); any other stream still open
// is reset now. ending is set before the state is read, so a down pump
// that delivers the FIN after this read sees it.
func (s *stream) endWithSession() {
	s.ending.Store(true)
	st := s.currentState()
	if st == stateClosed || st == stateReset {
		return
	}
	if st != stateRemoteFIN && s.recv.finished() {
		return
	}
	s.abort(false)
}

// abort ends the stream at once (the transition to reset); sendRST says
// whether the peer must be told. A stream already finished stays as it is.
func (s *stream) abort(sendRST bool) { s.transition(evReset, sendRST) }

// sendRST queues the RST that tells the peer about a reset (v2). It is
// called once, on entering reset.
func (s *stream) sendRST() {
	f := Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagRST, Stream: s.id}}
	select {
	case s.control <- f:
	default:
		// The control queue is full only when the peer floods us with
		// frames that need answers; the stream is gone on our side anyway.
		s.logger().Debug("control queue full, RST dropped")
	}
}
