package stages

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sirupsen/logrus"

	"usocks/wire"
	v1 "usocks/wire/v1"
)

// Record stages of legacy protocol v1 (wire/v1, ../testdata/usocks-v1).
// They plug into the same pipeline as v2: the mux hands them the same
// frames, and they translate at the edge. A v1 tunnel message (version 1,
// flags, id, payload) maps one to one onto a FrameStream frame, because v1's
// SYN/DAT/FIN/RST bits are v2's; the record types close, reset and nodata
// map onto FrameClose, FrameReset and FramePad. v1 has no windows, pings or
// other frames: the tunnel stages do not send them in v1 mode.

// EncryptV1 is the mux → backend writer stage for v1.
type EncryptV1 struct {
	Sealer *v1.Sealer
	Rand   io.Reader // padding of close/reset records
	In     <-chan Batch
	Out    chan<- Sealed
	Log    *logrus.Entry
	Tap    func(*wire.Frame)

	synced bool
	msg    []byte
}

// Run seals until In is closed (then closes Out) or ctx is done. The 16-byte
// sync block goes out with the first record, never alone, as the original
// does: a peer with nothing to say sends nothing at all.
func (e *EncryptV1) Run(ctx context.Context) error {
	start := func() ([]byte, error) {
		if e.synced {
			return nil, nil
		}
		e.synced = true
		return append([]byte(nil), e.Sealer.Sync()...), nil
	}
	return sealLoop(ctx, e.In, e.Out, e.Tap, start, e.seal)
}

func (e *EncryptV1) seal(out []byte, sf *Frame, _ bool) ([]byte, error) {
	f := &sf.Frame
	switch f.Type {
	case wire.FrameStream:
		e.msg = v1.AppendMessage(e.msg[:0], v1.Message{Flags: v1.Flags(f.Flags), ID: f.Stream, Payload: f.Payload})
		return e.Sealer.AppendMessage(out, e.msg), nil
	case wire.FrameClose, wire.FrameReset:
		var pad [4]byte
		if _, err := io.ReadFull(e.Rand, pad[:]); err != nil {
			return out, err
		}
		if f.Type == wire.FrameClose {
			return e.Sealer.AppendClose(out, pad), nil
		}
		return e.Sealer.AppendReset(out, pad), nil
	case wire.FramePad:
		return e.Sealer.AppendNodata(out, []byte{4, 4, 4, 4})
	}
	return out, fmt.Errorf("v1 cannot carry a %s frame", f.Type)
}

// DecryptV1 is the backend reader → demux stage for v1.
type DecryptV1 struct {
	Opener *v1.Opener
	In     <-chan Chunk
	// From, if set, replaces In: decrypt reads the backend itself, with
	// From.ReadChunk on its own goroutine (the reader is then no
	// goroutine of its own; its Tap still sees every chunk), so what
	// the socket says comes after the records before it. A read error
	// after the close record is then the peer's end, not a failure: the
	// original closes its socket right after its close record, and a
	// reset is what the kernel sends when it closes with our records
	// unread.
	From *BackendReader
	Out  chan<- Frame
	Log  *logrus.Entry
	Tap  func(*wire.Frame, int)
	// Failed, if set, is told Run's error (not ctx's) before Out closes:
	// v1 takes a bare EOF for the peer's end, so the session must know of
	// a failure before the demux sees its input end.
	Failed func(error)
}

// Run opens records until In is closed (then closes Out) or an error. The
// errors are v1's: v1.ErrFirstPacketIncorrect (answer nothing),
// v1.ErrHashFail / v1.ErrInvalidHeader (answer with a reset record, see
// v1.NeedsReset), v1.ErrRemoteReset. A message that is not a valid tunnel
// message (short, wrong version) is logged and dropped, as the original
// server does.
func (d *DecryptV1) Run(ctx context.Context) (err error) {
	defer func() {
		if err != nil && ctx.Err() == nil && d.Failed != nil {
			d.Failed(err)
		}
		close(d.Out)
	}()
	closed := false // the close record came
	for {
		var c Chunk
		var ok bool
		if d.From != nil {
			c, ok, err = d.From.ReadChunk(ctx)
		} else {
			c, ok, err = recv(ctx, d.In)
		}
		var be *BackendError
		if closed && errors.As(err, &be) {
			return nil
		}
		if err != nil {
			return err
		}
		if !ok {
			return EndV1(d.Opener)
		}
		d.Opener.Feed(c.B)
		c.Release()
		for {
			ev, err := d.Opener.Next()
			if errors.Is(err, v1.ErrNeedMore) {
				break
			}
			if err != nil {
				return err
			}
			wf, ok, err := FrameOfV1(ev)
			if err != nil {
				d.Log.WithError(err).Warn("dropping invalid v1 tunnel message")
				continue
			}
			if !ok {
				continue
			}
			closed = closed || wf.Type == wire.FrameClose
			f := Frame{Frame: wf}
			if len(wf.Payload) > 0 {
				// ev.Payload is valid only until the next call: copy.
				if len(wf.Payload) <= payloadBufSize {
					f.buf = getBuf(len(wf.Payload))
					f.Payload = append(f.buf.B[:0], wf.Payload...)
				} else {
					f.Payload = append([]byte(nil), wf.Payload...)
				}
			}
			if d.Tap != nil {
				d.Tap(&f.Frame, 0)
			}
			select {
			case d.Out <- f:
			case <-ctx.Done():
				f.Release()
				return ctx.Err()
			}
		}
	}
}

// FrameOfV1 is the tunnel frame a v1 record event carries: CLOSE for the
// close record, the message's stream frame for a message (its flags
// limited to SYN, DAT, FIN and RST; its payload aliases ev.Payload, kept
// only with DAT). ok is false for events that carry no frame (NODATA) and
// for messages the original drops in silence (stream 0 or 65535, no
// flags); err is an invalid tunnel message, which v1 logs and drops.
func FrameOfV1(ev v1.Event) (f wire.Frame, ok bool, err error) {
	switch ev.Kind {
	case v1.EventClose:
		return wire.Frame{Type: wire.FrameClose}, true, nil
	case v1.EventMessage:
		m, err := v1.ParseMessage(ev.Payload)
		if err != nil {
			return f, false, err
		}
		f.Type = wire.FrameStream
		f.Stream = m.ID
		f.Flags = wire.Flags(m.Flags) & (wire.FlagSYN | wire.FlagDAT | wire.FlagFIN | wire.FlagRST)
		if len(m.Payload) > 0 && f.Flags.Has(wire.FlagDAT) {
			f.Payload = m.Payload
		}
		if f.Stream == 0 || f.Stream == 0xffff || f.Flags == 0 {
			return wire.Frame{}, false, nil
		}
		return f, true, nil
	}
	return f, false, nil
}

// EndV1 is what the end of the backend's byte stream means for the v1
// records read from it: nil after whole records (the demux tells a secure
// end from an insecure one by whether it saw CLOSE), else v1's error.
func EndV1(o *v1.Opener) error {
	err := o.EOF()
	if errors.Is(err, v1.ErrConnectionClosed) || errors.Is(err, v1.ErrInsecureClose) {
		return nil
	}
	return err
}
