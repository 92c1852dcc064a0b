package stages

import (
	"context"
	"net"
	"sync"

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

// handleDatagram routes a DATAGRAM frame (SPEC-v2.md §6a). On the server it
// goes to the stream's association; on the client an empty one opens the
// association (the relay's reply goes to the app in the stream, as if the
// server had sent it) and others go to the app through the relay. Datagrams that
// have nowhere to go are dropped: UDP may lose packets, a tunnel may not
// queue them without bound.
func (d *Demux) handleDatagram(f Frame) {
	defer f.Release()
	s, ok := d.streams[f.Stream]
	if !ok || d.Legacy {
		return
	}
	if d.Role == Server {
		s.deliverDatagram(f.Payload)
		return
	}
	if d.Relay == nil {
		return
	}
	if len(f.Payload) > 0 {
		d.Relay.Deliver(f.Stream, f.Payload)
		return
	}
	if s.relayOpen {
		return // the association is open already: ignored (§6d)
	}
	reply := d.Relay.Open(s.id, s.appIP, s.sent.bytes(), s.SendDatagram)
	if reply == nil {
		return // the app did not ask for an association (a TCP stream): ignored
	}
	s.relayOpen = true
	buf := getBuf(len(reply))
	rf := Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: s.id, Payload: append(buf.B[:0], reply...)}, buf: buf}
	if err := s.recv.inject(rf); err != nil {
		s.abort(true)
	}
}

// appPrefix holds the first bytes an app sent on a client stream.
type appPrefix struct {
	mu sync.Mutex
	b  []byte
}

// appPrefixLen bounds appPrefix: a SOCKS5 greeting, username/password
// and request fit.
const appPrefixLen = 1100

func (p *appPrefix) record(b []byte) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.b) < appPrefixLen+1 {
		p.b = append(p.b, b[:min(len(b), appPrefixLen+1-len(p.b))]...)
	}
}

func (p *appPrefix) bytes() []byte {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]byte(nil), p.b...)
}
