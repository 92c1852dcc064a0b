package stages

import (
	"context"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

// Record stages of protocol v2: Encrypt seals batches of frames into
// records; Decrypt opens records into frames. Each owns its direction's
// key state (wire.Sealer / wire.Opener) and nothing else touches it.

// ErrTruncated means the backend ended in the middle of a record.
var ErrTruncated = errors.New("backend ended inside a record")

// Encrypt is the mux → backend writer stage.
type Encrypt struct {
	// Sealer seals the records; it must hold its key (wire.NewSealerKey)
	// if Rekey is set. Its key is forgotten when Run returns.
	Sealer *wire.Sealer
	In     <-chan Batch
	Out    chan<- Sealed
	// Cell, if set, pads the last record of every batch so that the
	// batch, as written, is a whole number of Cell-byte cells (the
	// defence policy's cells, SPEC-v2.md §7a).
	Cell int
	// Rekey, if set, makes the stage rekey its direction in band (a
	// KEYUPDATE frame, then the next key, both inside the Sealer) when
	// its key has been used long enough.
	Rekey *Rekeyer
	Log   *logrus.Entry
	// Tap, if set, sees every frame and its padding as it is sealed
	// (capture).
	Tap func(f *wire.Frame, padLen int)
	// Resume, if set, is told after each batch is sealed (resumable
	// sessions): the resend stage, which owns the frames' buffers, reads
	// it before it frees what the peer acknowledged, so the order "sealed,
	// then freed" is one the race detector sees too (the ACK that proves
	// it crossed the network, which the detector cannot follow).
	Resume *ResumeState

	free chan []byte
}

// Recycle takes back a written batch buffer; the backend writer calls it.
// It never blocks.
func (e *Encrypt) Recycle(s Sealed) {
	select {
	case e.freeList() <- s.B[:0]:
	default:
	}
}

func (e *Encrypt) freeList() chan []byte {
	if e.free == nil {
		e.free = make(chan []byte, BatchQueueLen+2)
	}
	return e.free
}

// Run seals until In is closed (then closes Out) or ctx is done.
func (e *Encrypt) Run(ctx context.Context) error {
	free := e.freeList()
	defer keepList(free)() // emptied when the process is idle (freelists.go)
	defer e.Sealer.Forget()
	start := func() ([]byte, error) {
		var out []byte
		select {
		case out = <-free:
		default:
		}
		if e.Rekey != nil && e.Rekey.due(e.Sealer.Count()) {
			var err error
			if out, err = e.Rekey.rekey(out, e.Sealer); err != nil {
				return out, err // ends the session
			}
		}
		return out, nil
	}
	seal := func(out []byte, sf *Frame, last bool) ([]byte, error) {
		f := &sf.Frame
		pad := sf.padLen
		if last && e.Cell > 0 {
			// out holds this batch's records so far (and a KEYUPDATE).
			n := len(out) + recordLen(sf)
			pad += (e.Cell - n%e.Cell) % e.Cell
		}
		pad = min(pad, wire.MaxBodyLen-wire.FrameHeaderLen-len(f.Payload))
		if e.Tap != nil {
			e.Tap(f, pad)
		}
		out, err := e.Sealer.SealFrame(out, f, pad)
		if err != nil {
			err = fmt.Errorf("seal: %w", err)
		}
		if last && e.Resume != nil {
			e.Resume.sealed.Add(1)
		}
		return out, err
	}
	return sealLoop(ctx, e.In, e.Out, nil, start, seal)
}

// sealLoop is the loop of both encrypt stages (v2 and v1): take a batch,
// seal its frames into one buffer that start provides, release each frame,
// hand the buffer to the writer. It closes out when it returns.
func sealLoop(ctx context.Context, in <-chan Batch, out chan<- Sealed, tap func(*wire.Frame),
	start func() ([]byte, error), seal func(buf []byte, f *Frame, last bool) ([]byte, error)) error {
	defer close(out)
	for {
		b, ok, err := recv(ctx, in)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		buf, err := start() // an error still releases the batch's frames
		for i := range b {
			f := &b[i]
			if tap != nil {
				tap(&f.Frame)
			}
			if err == nil {
				buf, err = seal(buf, f, i == len(b)-1)
			}
			f.Release()
		}
		if err != nil {
			return err
		}
		select {
		case out <- Sealed{B: buf}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Decrypt is the backend reader → demux stage.
type Decrypt struct {
	// Opener opens the records. Made with wire.NewOpenerKey it follows
	// the peer's KEYUPDATE frames; made from an AEAD, a KEYUPDATE is a
	// protocol error. Its key is forgotten when Run returns.
	Opener *wire.Opener
	In     <-chan Chunk
	Out    chan<- Frame
	Log    *logrus.Entry
	// Tap, if set, sees every frame after it is opened (capture).
	Tap func(*wire.Frame, int)
	// Chaff counts PAD frames verified and discarded.
	Chaff func()
	// Events, if set, is told what arrives, for the defence stage.
	Events *DefenceEvents
	// Resume, if set, makes this the decrypt stage of one link of a
	// resumable session (SPEC-v2.md §7b): it takes the peer's ACK frames,
	// counts the numbered frames it hands on, and leaves Out open (it
	// belongs to the session, not the link). The backend's EOF is then
	// nil after a CLOSE or RESET and ErrInsecureClose without one.
	Resume *ResumeState
	// Lane, if set (with Resume), makes this the decrypt stage of one
	// lane of a session striped over several connections (SPEC-v2.md
	// §7d): numbered frames go to Lane's Reorder, not straight to Out;
	// CONTROL messages go to Lane; an ACK lower than one seen is old.
	Lane *LaneIn
	// Failed, if set, is told Run's error (not ctx's) before Out closes,
	// in a session that is not resumable: the demux takes its input's end
	// for an insecure close, so the session must know of a failure (a
	// record that fails authentication gets RESET, SPEC-v2.md §7) first.
	// A resumable session's Out stays open; Failed is not called then.
	Failed func(error)
}

// Run opens records until In is closed (then closes Out) or an error. A
// record that fails authentication is dropped unreleased and ends the
// session with wire.ErrAuth: nothing after it can be trusted. Records are
// reassembled and opened by a wire.RecordReader, in place in the chunk
// read (wire.RecordReader.Borrow); the plaintext goes
// straight into a pooled buffer of the right class, and a frame whose
// payload is much smaller than its record body (padding) is compacted so
// that it keeps only what its payload needs.
func (d *Decrypt) Run(ctx context.Context) (err error) {
	if d.Resume == nil {
		defer func() {
			if err != nil && ctx.Err() == nil && d.Failed != nil {
				d.Failed(err)
			}
			close(d.Out)
		}()
	}
	defer d.Opener.Forget()
	ended := false  // a CLOSE or RESET went to the demux
	var join joiner // resumable: the pieces of a split frame
	defer join.release()
	rr := wire.NewRecordReader(d.Opener, wire.MaxBodyLen+wire.RecordOverhead) // a record cut by a chunk's end
	for {
		c, ok, err := recv(ctx, d.In)
		if err != nil {
			return err
		}
		if !ok {
			if rr.Buffered() > 0 {
				return ErrTruncated
			}
			if d.Resume != nil && !ended {
				return ErrInsecureClose
			}
			return nil
		}
		// The chunk is opened in place; only a record it cuts off is
		// copied (Return), then the chunk goes back to the pool.
		rr.Borrow(c.B)
		if d.Events != nil {
			d.Events.Read(len(c.B))
		}
		for {
			bl, err := rr.Ready()
			if err != nil {
				return err
			}
			if bl < 0 {
				rr.Return()
				c.Release()
				if d.Events != nil {
					d.Events.Notify()
				}
				break
			}
			var owner *payloadBuf
			var dst []byte
			if bl+wire.TagSize <= payloadBufSize {
				owner = getBuf(bl + wire.TagSize)
				dst = owner.B[:0]
			}
			wf, padLen, opened, err := rr.Next(dst)
			if opened && d.Tap != nil {
				tf := wf // only a tapped frame escapes to the heap
				d.Tap(&tf, padLen)
			}
			if err != nil {
				putBuf(owner)
				return err
			}
			if d.Events != nil {
				d.Events.Frame(wf.Type, len(wf.Payload))
			}
			if d.Lane != nil {
				d.Lane.Seen()
			}
			if d.Lane != nil && (wf.Type == wire.FrameControl || wf.Type == wire.FrameAck) {
				err := d.Lane.take(&wf)
				putBuf(owner)
				if err != nil {
					return err
				}
				continue
			}
			switch wf.Type {
			case wire.FrameKeyUpdate:
				putBuf(owner)
				continue
			case wire.FramePad:
				putBuf(owner)
				if d.Chaff != nil {
					d.Chaff()
				}
				continue
			case wire.FrameAck:
				if d.Resume == nil {
					putBuf(owner)
					return fmt.Errorf("%w: ACK in a session without resumption", ErrProtocol)
				}
				n := wire.AckCount(&wf)
				putBuf(owner)
				if err := d.Resume.acked(n); err != nil {
					return err
				}
				continue
			case wire.FrameControl:
				// Backend control (SPEC-v2.md §7c): without lanes every
				// message is ignored.
				putBuf(owner)
				continue
			case wire.FrameClose, wire.FrameReset:
				ended = true
			}
			f := Frame{Frame: wf, buf: owner}
			if d.Resume != nil {
				var whole bool
				if f, whole, err = join.add(wf, owner); err != nil {
					return err
				}
				if !whole {
					continue
				}
				if d.Lane != nil {
					if err := d.Lane.deliver(ctx, f); err != nil {
						return err
					}
					continue
				}
			}
			n := len(f.Payload)
			// compact may move the payload and free f's buffer: from
			// here on only cf owns it.
			cf := compact(f)
			select {
			case d.Out <- cf:
			case <-ctx.Done():
				cf.Release()
				return ctx.Err()
			}
			if d.Resume != nil {
				d.Resume.delivered(n)
			}
		}
	}
}
