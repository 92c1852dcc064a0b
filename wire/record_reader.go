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
// Borrow is Feed without the copy: records that lie whole in the borrowed
// chunk are opened where they are, and only a record cut by the chunk's
// end is copied (Return), so a bulk transfer's ciphertext is not copied
// once more before it is opened.
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
	// rest is the unread part of a borrowed chunk (Borrow): it follows
	// pend[off:] in the stream.
	rest []byte
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
	r.Return()
	r.keep(b)
}

// keep appends b to the reader's own buffer, after its unread tail.
func (r *RecordReader) keep(b []byte) {
	if r.off > 0 {
		// Keep only the unread tail, at the front.
		r.pend = append(r.pend[:0], r.pend[r.off:]...)
		r.off = 0
	}
	r.pend = append(r.pend, b...)
}

// Borrow appends b without copying it: the reader reads b in place until
// Return, and the caller must not change or reuse b before it has called
// Return (or Feed or Borrow, which return it first).
func (r *RecordReader) Borrow(b []byte) {
	r.Return()
	r.rest = b
}

// Return copies what the reader has not yet read of the borrowed chunk
// (at most the start of one record) into its own buffer: the chunk is the
// caller's again.
func (r *RecordReader) Return() {
	if len(r.rest) > 0 {
		r.keep(r.rest)
	}
	r.rest = nil
}

// Buffered is the number of bytes fed and not yet consumed by a whole
// record. At the end of the stream it is 0 unless the stream was cut
// inside a record.
func (r *RecordReader) Buffered() int { return len(r.pend) - r.off + len(r.rest) }

// take moves up to n bytes from the front of the borrowed chunk to the
// reader's own buffer.
func (r *RecordReader) take(n int) {
	n = min(n, len(r.rest))
	if n <= 0 {
		return
	}
	r.keep(r.rest[:n])
	r.rest = r.rest[n:]
}

// next returns where the next record is read from: the reader's own
// buffer while it holds unread bytes (topped up from the borrowed chunk
// with what the record still lacks, once its length is known), else the
// borrowed chunk in place.
func (r *RecordReader) next() ([]byte, error) {
	if r.off == len(r.pend) {
		r.pend, r.off = r.pend[:0], 0
		if len(r.rest) > 0 {
			return r.rest, nil
		}
		return nil, nil
	}
	if have := len(r.pend) - r.off; have < LengthBoxSize {
		r.take(LengthBoxSize - have)
	}
	bl, err := r.Opener.BodyLen(r.pend[r.off:])
	if err == nil && bl >= 0 {
		r.take(LengthBoxSize + bl + TagSize - (len(r.pend) - r.off))
	}
	return r.pend[r.off:], err
}

// Ready returns the body length of the next record once the whole record
// is buffered, or -1 while more bytes are needed. It lets a caller pick a
// buffer of the right size before Next. Failures are ErrAuth (the length
// box does not open), as in Opener.BodyLen.
func (r *RecordReader) Ready() (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	b, err := r.next()
	if err == nil {
		var bl int
		if bl, err = r.Opener.BodyLen(b); err == nil {
			if bl < 0 || len(b) < LengthBoxSize+bl+TagSize {
				return -1, nil
			}
			return bl, nil
		}
	}
	r.err = err
	return 0, err
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
	b, _ := r.next() // Ready found the record whole, where next says
	body, n, err := r.Opener.Open(dst, b)
	if err != nil {
		r.err = err
		return f, 0, false, err
	}
	if r.off < len(r.pend) {
		r.off += n
	} else {
		r.rest = r.rest[n:]
	}
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
