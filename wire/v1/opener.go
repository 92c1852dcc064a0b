package v1

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"strconv"
)

// EventKind says what an Event from Opener.Next carries.
type EventKind uint8

// The events an Opener produces. nodata packets produce none, and a
// reset packet ends the stream with ErrRemoteReset instead.
const (
	// EventMessage: a data packet completed a message (Event.Payload),
	// made of the data of all part packets since the previous message
	// followed by the data packet's own data. It may be empty.
	EventMessage EventKind = 1 + iota
	// EventClose: a close packet arrived. Nothing ends: the stream is
	// still read until end of stream, which is then a clean close.
	EventClose
)

// String returns "message" or "close".
func (k EventKind) String() string {
	switch k {
	case EventMessage:
		return "message"
	case EventClose:
		return "close"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is one result of Opener.Next.
type Event struct {
	// Kind is EventMessage or EventClose.
	Kind EventKind
	// Payload is the message for EventMessage; nil otherwise. It aliases
	// the Opener's buffers and is valid only until the next call to
	// Feed or Next: copy it to keep it.
	Payload []byte
}

// Opener is the receiving half of one direction of a record channel
// (spec §3.1, §3.6). Ciphertext is handed to Feed in chunks of any size,
// cut anywhere (the sync block may arrive alone or split); Next then
// returns the events it contains, one at a time.
//
// The first 16 bytes are used as the CBC chaining value and otherwise
// ignored. Each packet header is checked as soon as its first block is
// decrypted, the rest of the packet is awaited, then the digest is
// checked. Any failure is sticky: Next keeps returning it and Feed
// ignores further input. After the stream's end of file, call EOF.
//
// Memory is bounded by what the caller feeds between calls to Next, one
// packet (at most MaxPacketLen bytes) and one pending multi-part message
// (at most MaxMessageSize bytes). An Opener is not safe for concurrent
// use.
type Opener struct {
	block cipher.Block
	dec   cipher.BlockMode // nil until the sync block is complete

	sync  [BlockSize]byte // sync block being collected
	syncN int
	tail  [BlockSize]byte // incomplete ciphertext block
	tailN int

	buf []byte // decrypted plaintext; unread part is buf[off:]
	off int

	// The header of the packet at buf[off:], once checked.
	hdrOK   bool
	pktLen  int
	dataLen int
	typ     PacketType

	pending   []byte // data of part packets awaiting the data packet
	verified  bool   // a packet has passed its digest check
	closeSeen bool   // a close packet has been received
	err       error  // sticky error
}

// pendingKeepCap is the largest pending buffer kept for reuse once a
// multi-part message has been delivered.
const pendingKeepCap = 1 << 18

// bufKeepCap is the largest plaintext buffer kept for reuse once empty.
const bufKeepCap = 4 * MaxPacketLen

// NewOpener returns an Opener for a stream encrypted with key.
func NewOpener(key [KeySize]byte) *Opener {
	return &Opener{block: newBlock(key)}
}

// Feed hands the next bytes of the stream to the Opener. It decrypts
// every complete block and keeps an incomplete one for later; ct is not
// retained. After an error Feed does nothing. Call Next until it returns
// an error (typically ErrNeedMore) before feeding again, so that the
// buffer stays small.
func (o *Opener) Feed(ct []byte) {
	if o.err != nil {
		return
	}
	if o.dec == nil {
		n := copy(o.sync[o.syncN:], ct)
		o.syncN += n
		ct = ct[n:]
		if o.syncN < BlockSize {
			return
		}
		o.dec = cipher.NewCBCDecrypter(o.block, o.sync[:])
	}
	if o.tailN > 0 {
		n := copy(o.tail[o.tailN:], ct)
		o.tailN += n
		ct = ct[n:]
		if o.tailN < BlockSize {
			return
		}
		o.decrypt(o.tail[:])
		o.tailN = 0
	}
	whole := len(ct) - len(ct)%BlockSize
	if whole > 0 {
		o.decrypt(ct[:whole])
	}
	o.tailN = copy(o.tail[:], ct[whole:])
}

// decrypt appends the decryption of the whole blocks ct to the buffer.
func (o *Opener) decrypt(ct []byte) {
	live := len(o.buf) - o.off
	switch {
	case live == 0 && cap(o.buf) > bufKeepCap && len(ct) <= MaxPacketLen:
		o.buf, o.off = nil, 0 // drop a buffer grown by one huge feed
	case live == 0:
		o.buf, o.off = o.buf[:0], 0
	case o.off >= live: // compacting costs at most what was consumed
		copy(o.buf, o.buf[o.off:])
		o.buf, o.off = o.buf[:live], 0
	}
	start := len(o.buf)
	o.buf = append(o.buf, ct...)
	o.dec.CryptBlocks(o.buf[start:], o.buf[start:])
}

// fail records err as the sticky error, replacing it by the
// first-packet error when no packet has been verified yet.
func (o *Opener) fail(err error) error {
	if !o.verified {
		err = firstPacketError{cause: err}
	}
	o.err = err
	return err
}

// Next returns the next event of the stream. When the input fed so far
// holds no further complete event it returns ErrNeedMore; feed more and
// call again. Any other error is final and sticky:
//   - ErrFirstPacketIncorrect: bad header or digest before any verified
//     packet; close without answering.
//   - ErrHashFail, ErrInvalidHeader (ErrMessageTooLarge): send a reset
//     packet, then close (see NeedsReset).
//   - ErrRemoteReset: the peer sent a reset; close without answering.
func (o *Opener) Next() (Event, error) {
	if o.err != nil {
		return Event{}, o.err
	}
	if len(o.pending) == 0 && cap(o.pending) > pendingKeepCap {
		o.pending = nil
	}
	for {
		avail := o.buf[o.off:]
		if len(avail) < RecordHeaderLen {
			return Event{}, ErrNeedMore
		}
		if !o.hdrOK {
			if err := o.checkHeader(avail); err != nil {
				return Event{}, o.fail(err)
			}
		}
		if len(avail) < o.pktLen {
			return Event{}, ErrNeedMore
		}
		pkt := avail[:o.pktLen]
		o.off += o.pktLen
		o.hdrOK = false
		body := pkt[:o.pktLen-DigestLen]
		sum := digest(body)
		if !bytes.Equal(sum[:], pkt[o.pktLen-DigestLen:]) {
			return Event{}, o.fail(ErrHashFail)
		}
		o.verified = true
		data := body[RecordHeaderLen : RecordHeaderLen+o.dataLen]
		switch o.typ {
		case PacketNodata:
		case PacketReset:
			o.err = ErrRemoteReset
			return Event{}, o.err
		case PacketClose:
			o.closeSeen = true
			return Event{Kind: EventClose}, nil
		case PacketPart:
			o.pending = append(o.pending, data...)
		case PacketData:
			if len(o.pending) > 0 {
				data = append(o.pending, data...)
				o.pending = data[:0]
			}
			return Event{Kind: EventMessage, Payload: data}, nil
		}
	}
}

// checkHeader validates the header at the start of p (spec §3.6 step 1)
// and records the packet's layout.
func (o *Opener) checkHeader(p []byte) error {
	l := int(binary.BigEndian.Uint16(p))
	pad := int(p[2])
	typ := PacketType(p[3])
	n := RecordOverhead + l + pad
	switch {
	case n%BlockSize != 0:
		return ErrInvalidHeader
	case !typ.Valid():
		return ErrInvalidHeader
	case !typ.carriesData() && l != 0:
		return ErrInvalidHeader
	case typ.carriesData() && len(o.pending)+l > MaxMessageSize:
		return ErrMessageTooLarge
	}
	o.hdrOK, o.pktLen, o.dataLen, o.typ = true, n, l, typ
	return nil
}

// EOF reports the end of the stream (the backend reached end of file)
// and returns the final error: the sticky error if there was one,
// otherwise ErrConnectionClosed if a close packet was received (a clean
// end) or ErrInsecureClose if not (the stream may have been truncated;
// report it as a warning). Bytes of an incomplete packet are ignored, as
// the original does. Call it after Next has returned ErrNeedMore.
func (o *Opener) EOF() error {
	if o.err == nil {
		if o.closeSeen {
			o.err = ErrConnectionClosed
		} else {
			o.err = ErrInsecureClose
		}
	}
	return o.err
}

// SecureClosed reports whether a close packet has been received.
func (o *Opener) SecureClosed() bool { return o.closeSeen }

// Verified reports whether at least one packet has passed its digest
// check, after which receive errors call for a reset (spec §3.8).
func (o *Opener) Verified() bool { return o.verified }

// Synced reports whether the 16-byte sync block has been received.
func (o *Opener) Synced() bool { return o.dec != nil }

// Err returns the sticky error, or nil while the stream is healthy.
func (o *Opener) Err() error { return o.err }
