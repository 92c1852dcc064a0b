package wire

import (
	"errors"
	"fmt"
)

// ErrProtocol marks an authenticated record whose frame the receiver
// cannot act on: a malformed frame, or a KEYUPDATE where none may come.
// The stages end the session with it (it cannot come from an attacker
// without the key).
var ErrProtocol = errors.New("protocol error")

// ErrUnexpectedKeyUpdate is a KEYUPDATE frame at a RecordReader whose
// Opener cannot rekey (it was made from an AEAD, not a key); it comes
// wrapped in ErrProtocol.
var ErrUnexpectedKeyUpdate = errors.New("unexpected KEYUPDATE")

// RecordReader reassembles the records of one direction from ciphertext
// that arrives in chunks of any size, and opens them in order: Feed
// appends bytes, Next opens the next whole record into a buffer of the
// caller's and parses its frame. It is synchronous and does no I/O; the
// decrypt stage and replay both read records through it.
//
// A KEYUPDATE frame moves the Opener to the next key (Opener.Rekey)
// before the next record is opened, and is returned like any frame. Every
// error is final: after one, the reader opens nothing more.
type RecordReader struct {
	// Opener opens the records. Made with NewOpenerKey it follows
	// KEYUPDATE frames; made from an AEAD, a KEYUPDATE is a protocol error.
	Opener *Opener

	pend []byte // fed bytes; pend[off:] is not read yet
	off  int
	err  error
}

// NewRecordReader returns a reader of o's records whose buffer starts
// with room for size bytes (it grows when a chunk does not fit).
func NewRecordReader(o *Opener, size int) *RecordReader {
	return &RecordReader{Opener: o, pend: make([]byte, 0, size)}
}

// Feed appends ciphertext. The bytes are copied: b may be reused as soon
// as Feed returns.
func (r *RecordReader) Feed(b []byte) {
	if r.off > 0 {
		// Keep only the unread tail, at the front.
		r.pend = append(r.pend[:0], r.pend[r.off:]...)
		r.off = 0
	}
	r.pend = append(r.pend, b...)
}

// Buffered is the number of bytes fed and not yet consumed by a whole
// record. At the end of the stream it is 0 unless the stream was cut
// inside a record.
func (r *RecordReader) Buffered() int { return len(r.pend) - r.off }

// Ready returns the body length of the next record once the whole record
// is buffered, or -1 while more bytes are needed. It lets a caller pick a
// buffer of the right size before Next. Failures are ErrAuth (the length
// box does not open), as in Opener.BodyLen.
func (r *RecordReader) Ready() (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	bl, err := r.Opener.BodyLen(r.pend[r.off:])
	if err != nil {
		r.err = err
		return 0, err
	}
	if bl < 0 || r.Buffered() < LengthBoxSize+bl+TagSize {
		return -1, nil
	}
	return bl, nil
}

// Next opens the next record if it is whole. Its body is appended to dst
// and the frame's payload aliases that body, never the reader's buffer.
// ok says whether a record was opened and parsed into f (with padLen
// bytes of padding); ok false with a nil error means more bytes are
// needed. A KEYUPDATE that cannot be followed comes back with ok true
// (the frame was opened) and the error.
func (r *RecordReader) Next(dst []byte) (f Frame, padLen int, ok bool, err error) {
	bl, err := r.Ready()
	if err != nil || bl < 0 {
		return f, 0, false, err
	}
	body, n, err := r.Opener.Open(dst, r.pend[r.off:])
	if err != nil {
		r.err = err
		return f, 0, false, err
	}
	r.off += n
	if f, padLen, err = ParseFrame(body); err != nil {
		r.err = fmt.Errorf("%w: %w", ErrProtocol, err)
		return Frame{}, 0, false, r.err
	}
	if f.Type == FrameKeyUpdate {
		if err := r.Opener.Rekey(f.Payload); err != nil {
			if errors.Is(err, ErrNoKey) {
				err = fmt.Errorf("%w: %w", ErrProtocol, ErrUnexpectedKeyUpdate)
			}
			r.err = err
			return f, padLen, true, err
		}
	}
	return f, padLen, true, nil
}
