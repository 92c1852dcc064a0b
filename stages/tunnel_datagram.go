package stages

import (
	"context"
	"net"

	"usocks/wire"
)

// Datagrams of a stream (SPEC-v2.md §6a): DATAGRAM frames on a stream's
// id, for a frontend that serves UDP (on the server) or the client's
// DatagramRelay. They are droppable: every queue on their way is bounded
// and a full queue drops rather than waits.

// DatagramQueueLen bounds datagrams waiting for an association or a relay.
const DatagramQueueLen = 64

// MaxDatagram is the largest datagram carried (header included).
const MaxDatagram = wire.MaxPayloadLen

// OpenAssociation implements DatagramStream (server side).
func (s *stream) OpenAssociation() (<-chan []byte, error) {
	ch := make(chan []byte, DatagramQueueLen)
	s.dgrams.Store(&ch)
	f := Frame{Frame: wire.Frame{Type: wire.FrameDatagram, Stream: s.id}}
	if !s.sendData(context.Background(), f) {
		return nil, net.ErrClosed
	}
	return ch, nil
}

// SendDatagram implements DatagramStream.
func (s *stream) SendDatagram(p []byte) bool {
	if len(p) == 0 || len(p) > MaxDatagram {
		return false
	}
	buf := getBuf(len(p))
	f := Frame{Frame: wire.Frame{Type: wire.FrameDatagram, Stream: s.id, Payload: append(buf.B[:0], p...)}, buf: buf}
	select {
	case s.control <- f:
		return true
	default:
		f.Release()
		return false
	}
}

// deliverDatagram hands a datagram from the peer to the association (server).
func (s *stream) deliverDatagram(p []byte) bool {
	ch := s.dgrams.Load()
	if ch == nil {
		return false
	}
	select {
	case *ch <- append([]byte(nil), p...):
		return true
	default:
		return false
	}
}
