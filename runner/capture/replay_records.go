package capture

import (
	"encoding/hex"
	"errors"
	"fmt"

	"usocks/stages"
	"usocks/wire"
	v1 "usocks/wire/v1"
)

func (rp *replayer) backend(s *rsess, e *Event) {
	d := s.dec[e.Dir]
	if d == nil {
		// Why not is said once: in the header notes, the forward-secrecy
		// note, or here.
		if !s.gap && rp.hdr.Plaintext && !rp.legacy() {
			rp.note(s, "records not decoded: the capture holds no session keys for this session")
		}
		return
	}
	if d.finished {
		rp.note(s, "more ciphertext after decoding of this direction stopped (not decoded)")
		return
	}
	got, err := d.feed(e.Data)
	rp.printDecoded(s, e.Dir, got, d)
	if err != nil {
		rp.decodeError(s, e.Dir, err)
	}
}

func (rp *replayer) printDecoded(s *rsess, dir Dir, got []decoded, d *recDecoder) {
	for i := range got {
		g := &got[i]
		l := &rline{Session: s.id, Dir: dir.String(), Kind: "record", Type: g.typ.String(), Stream: intp(int(g.stream)),
			Len: intp(g.n)}
		if g.typ == wire.FrameStream {
			l.Flags = g.flags.String()
		}
		if !rp.legacy() { // v1's stage does not report record padding
			l.Pad = intp(g.pad)
			l.Size = intp(wire.RecordOverhead + wire.FrameHeaderLen + g.n + g.pad)
		}
		if g.data != nil {
			l.Data = hex.EncodeToString(g.data)
		}
		if g.typ == wire.FrameWindow && len(g.data) == 4 {
			l.Info = fmt.Sprintf("credit=%d", uint32(g.data[0])<<24|uint32(g.data[1])<<16|uint32(g.data[2])<<8|uint32(g.data[3]))
		}
		rp.emit(l)
	}
	for _, n := range d.takeNotes() {
		rp.fail(s, dir, nil, "decrypt stage: "+n)
	}
}

// decodeError reports the error record decoding stopped with.
func (rp *replayer) decodeError(s *rsess, d Dir, err error) {
	var msg string
	switch {
	case errors.Is(err, v1.ErrRemoteReset):
		rp.emit(&rline{Session: s.id, Dir: d.String(), Kind: "record", Type: "RESET", Stream: intp(0), Len: intp(0), Info: "(v1 reset record: the sender tore the session down)"})
		s.dec[d].sawReset = true
		return
	case errors.Is(err, wire.ErrAuth):
		msg = "bad tag: record authentication failed; nothing after this point can be trusted (tampering or corruption in transit, or wrong keys)"
	case errors.Is(err, v1.ErrFirstPacketIncorrect):
		msg = err.Error() + ": wrong --key, or not usocks v1 traffic"
	case errors.Is(err, v1.ErrHashFail):
		msg = "bad digest: " + err.Error() + " (tampering or corruption in transit)"
	case errors.Is(err, v1.ErrInvalidHeader):
		msg = "invalid record header: " + err.Error()
	case errors.Is(err, stages.ErrTruncated):
		msg = "truncated: the backend ended inside a record (insecure close: possible truncation)"
	case errors.Is(err, stages.ErrProtocol):
		msg = err.Error()
	default:
		msg = "decode: " + err.Error()
	}
	rp.fail(s, d, nil, msg)
}

func (rp *replayer) frame(s *rsess, e *Event) {
	f := e.Frame
	l := &rline{Session: s.id, Dir: e.Dir.String(), Kind: "frame", Type: f.Type.String(), Stream: intp(int(f.Stream)),
		Len: intp(f.Len), Pad: intp(f.Pad)}
	if f.Type == wire.FrameStream {
		l.Flags = f.Flags.String()
	}
	if e.Data != nil {
		l.Data = hex.EncodeToString(e.Data)
	}
	if rp.legacy() {
		l.Pad = nil // v1 frames have no padding field
	}
	rp.emit(l)
	s.lastFrame[e.Dir] = &f
	if msg := rp.track(s, e.Dir, &f); msg != "" {
		rp.fail(s, e.Dir, intp(int(f.Stream)), msg)
	}
}

// track follows stream state as the capturing side saw it and names the
// frames its demux would refuse.
func (rp *replayer) track(s *rsess, d Dir, f *Frame) string {
	if f.Type != wire.FrameStream {
		return ""
	}
	id := f.Stream
	st := s.streams[id]
	if f.Flags.Has(wire.FlagRST) {
		delete(s.streams, id)
		return ""
	}
	if f.Flags.Has(wire.FlagSYN) {
		if d != rp.clientDir() {
			if d == DirIn {
				return fmt.Sprintf("SYN from the server on stream %d (the client resets it)", id)
			}
			return ""
		}
		if st != nil && !rp.legacy() && d == DirIn {
			delete(s.streams, id)
			return fmt.Sprintf("duplicate SYN on stream %d (the stream is reset)", id)
		}
		st = &rstream{}
		s.streams[id] = st
	}
	if st == nil {
		if d != DirIn {
			return ""
		}
		if rp.legacy() {
			return fmt.Sprintf("message for unknown stream %d (ignored under v1 rules)", id)
		}
		return fmt.Sprintf("unknown stream %d: frame for a stream that is not open (answered with RST)", id)
	}
	if f.Flags.Has(wire.FlagFIN) {
		st.fin[d] = true
		if st.fin[DirIn] && st.fin[DirOut] {
			delete(s.streams, id)
		}
	}
	return ""
}

func (rp *replayer) eof(s *rsess, e *Event) {
	var info string
	switch {
	case e.Dir == DirIn && e.Err == "":
		info = "backend reader: EOF"
	case e.Dir == DirIn:
		info = "backend reader stopped: " + e.Err
	case e.Err == "":
		info = "backend writer: FIN sent after the last record"
	default:
		info = "backend writer stopped: " + e.Err
	}
	rp.emit(&rline{Session: s.id, Dir: e.Dir.String(), Kind: "eof", Info: info})
	d := s.dec[e.Dir]
	if d == nil {
		// Judged from the captured frames when the session ends.
		s.pendingEOF[e.Dir] = e.Err == ""
		return
	}
	if d.finished {
		return // it already stopped, and said why
	}
	got, err := d.finish()
	rp.printDecoded(s, e.Dir, got, d)
	if err != nil {
		rp.decodeError(s, e.Dir, err)
		return
	}
	if e.Err != "" {
		return // cut, not an end of stream
	}
	rp.judgeEOF(s, e.Dir, d.sawClose, d.sawReset || d.lastType == wire.FrameReset)
}

// judgeEOF says how one direction ended: CLOSE then EOF is secure; EOF
// without CLOSE (or RESET) is an insecure close.
func (rp *replayer) judgeEOF(s *rsess, dir Dir, closeSeen, resetSeen bool) {
	e := struct{ Dir Dir }{dir}
	switch {
	case closeSeen:
		rp.emit(&rline{Session: s.id, Dir: e.Dir.String(), Kind: "note", Info: "secure end of this direction: CLOSE, then end of stream"})
	case resetSeen:
		rp.emit(&rline{Session: s.id, Dir: e.Dir.String(), Kind: "note", Info: "this direction ended after a RESET"})
	case e.Dir == DirIn:
		rp.fail(s, DirIn, nil, "insecure close: EOF without a CLOSE record (possible truncation); open streams are reset")
	default:
		rp.emit(&rline{Session: s.id, Dir: e.Dir.String(), Kind: "note", Info: "this direction ended without a CLOSE record"})
	}
}
