package stages

import (
	"context"
	"io"
	"net"

	"usocks/wire"
)

// The stream as a frontend sees it (StreamIO) before its target is
// connected: the frontend reads the app's request and writes its reply
// within the stream's flow control.

// Read lets a frontend read what the app sent before the target is
// connected (a SOCKS or HTTP request). It returns credit like down does.
func (s *stream) Read(p []byte) (int, error) {
	for {
		s.recv.mu.Lock()
		if len(s.recv.chunks) > 0 {
			f := &s.recv.chunks[0]
			n := copy(p, f.Payload)
			f.Payload = f.Payload[n:]
			s.recv.size -= n
			if len(f.Payload) == 0 {
				f.Release()
				s.recv.chunks = s.recv.chunks[1:]
			}
			s.recv.mu.Unlock()
			s.recv.signalSpace()
			if !s.legacy {
				s.addPeerCredit(n)
			}
			return n, nil
		}
		eof := s.recv.eof
		s.recv.mu.Unlock()
		if eof {
			return 0, io.EOF
		}
		select {
		case <-s.recv.notify:
		case <-s.aborted:
			return 0, net.ErrClosed
		}
	}
}

// addPeerCredit returns n bytes of credit to the peer at once (frontend
// handshakes are small; no batching needed).
func (s *stream) addPeerCredit(n int) {
	s.recv.grant(n)
	w := Frame{Frame: wire.Frame{Type: wire.FrameWindow, Stream: s.id, Payload: wire.WindowPayload(nil, uint32(n))}}
	select {
	case s.control <- w:
	case <-s.aborted:
	}
}

// Write lets a frontend answer the app (proxy replies) before the target
// is connected. It sends DAT frames within the stream's credit.
func (s *stream) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, ok := s.takeCredit(context.Background(), min(len(p)-done, wire.MaxPayloadLen))
		if !ok {
			return done, net.ErrClosed
		}
		buf := getBuf(n)
		copy(buf.B, p[done:done+n])
		f := Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: s.id, Payload: buf.B[:n]}, buf: buf}
		if !s.sendData(context.Background(), f) {
			return done, net.ErrClosed
		}
		done += n
	}
	return done, nil
}

// ID is the stream id (for frontends' logs).
func (s *stream) ID() uint16 { return s.id }
