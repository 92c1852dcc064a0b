package stages

import (
	"context"
	"net"

	"usocks/wire"
)

// handleLegacy applies v1's receive rules (spec §4.5) to one message.
func (d *Demux) handleLegacy(ctx context.Context, f Frame) {
	id := f.Stream
	s, known := d.streams[id]
	if f.Flags.Has(wire.FlagRST) {
		f.Release()
		if known {
			// Answer it, as v1 peers expect, unless our FIN already went.
			st := s.currentState()
			s.abort(st == stateOpening || st == stateOpen || st == stateRemoteFIN)
		}
		return
	}
	if d.closed {
		f.Release()
		return
	}
	if f.Flags.Has(wire.FlagSYN) {
		if d.Role != Server {
			f.Release()
			return
		}
		if known {
			// v1: an existing stream with this id is reset first.
			s.abort(false)
			delete(d.streams, id)
		}
		if len(d.streams) >= d.MaxStreams {
			d.Log.WithField("limit", d.MaxStreams).Warn("stream limit reached, refusing SYN")
			d.rst(id)
			f.Release()
			return
		}
		s = d.newStream(id, true)
		known = true
		fe := d.Frontend
		d.spawn(ctx, s, d.openers.wrap(func() (net.Conn, error) { return fe.Open(ctx, s) }))
	}
	if !known {
		// The original raises KeyError here; a new peer ignores it.
		d.Log.WithField("stream", id).Debug("v1 message for an unknown stream ignored")
		f.Release()
		return
	}
	fin := f.Flags.Has(wire.FlagFIN)
	if len(f.Payload) > 0 {
		if err := s.recv.pushWait(f, s.aborted, ctx.Done()); err == errMemory {
			d.Log.WithField("stream", id).WithError(err).Warn("resetting stream")
			s.abort(true)
			return
		}
	} else {
		f.Release()
	}
	if fin {
		s.recv.finish()
	}
}
