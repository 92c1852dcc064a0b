package wire

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// Record layer of protocol v2. One direction of a backend is a sequence of
// records, each two AEAD boxes under that direction's key:
//
//	+---------------------------+-------------------------------------+
//	| AEAD(len u16 BE)  18 bytes | AEAD(body)   len + 16 bytes         |
//	+---------------------------+-------------------------------------+
//
// The nonce is a 96-bit little-endian counter, one per direction, starting at
// 0 and incremented after every box (so a record uses two). The body is one
// tunnel frame (frame.go). Nothing on the wire is in the clear.

// Sizes of the record layer.
const (
	TagSize        = 16          // Poly1305 / GCM tag
	NonceSize      = 12          // 96-bit nonce
	LengthBoxSize  = 2 + TagSize // sealed length
	RecordOverhead = LengthBoxSize + TagSize
	// MaxBodyLen is the hard limit of a record body, set by the u16 length.
	MaxBodyLen = 65535
	// MaxPayloadLen is the most stream payload a sender puts in one frame.
	MaxPayloadLen = 16 * 1024
	// DefaultRecordLimit is the number of AEAD operations after which a key
	// is spent: 2^25 boxes, i.e. 2^24 records, the bound of the v2
	// requirements and below the AES-GCM limit of RFC 8446 §5.5 (2^24.5).
	// Senders rekey in band (KEYUPDATE, SPEC-v2.md §4a) long before it,
	// after 2^22 records; a Sealer refuses to go past the limit and an
	// Opener fails a peer that does.
	DefaultRecordLimit = 1 << 25
)

// CipherID names an AEAD. Its value travels inside the sealed client header.
type CipherID uint8

// Ciphers.
const (
	CipherChaCha20Poly1305 CipherID = 1
	CipherAES256GCM        CipherID = 2
)

func (c CipherID) String() string {
	switch c {
	case CipherChaCha20Poly1305:
		return "chacha20-poly1305"
	case CipherAES256GCM:
		return "aes-256-gcm"
	}
	return fmt.Sprintf("cipher(%d)", uint8(c))
}

// ParseCipher maps a config name to a CipherID. "auto" and "" pick the
// cipher that is fastest on this CPU (DefaultCipher).
func ParseCipher(s string) (CipherID, error) {
	switch s {
	case "", "auto":
		return DefaultCipher(), nil
	case "chacha20-poly1305", "chacha20-ietf-poly1305":
		return CipherChaCha20Poly1305, nil
	case "aes-256-gcm":
		return CipherAES256GCM, nil
	}
	return 0, fmt.Errorf("unknown cipher %q (want auto, chacha20-poly1305 or aes-256-gcm)", s)
}

// DefaultCipher is AES-256-GCM where the CPU has AES and carry-less multiply
// instructions, ChaCha20-Poly1305 elsewhere.
func DefaultCipher() CipherID {
	switch runtime.GOARCH {
	case "amd64":
		if cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ {
			return CipherAES256GCM
		}
	case "arm64":
		if cpu.ARM64.HasAES && cpu.ARM64.HasPMULL {
			return CipherAES256GCM
		}
	case "s390x":
		return CipherAES256GCM
	}
	return CipherChaCha20Poly1305
}

// NewAEAD returns the AEAD c keyed with key.
func NewAEAD(c CipherID, key *[KeySize]byte) (cipher.AEAD, error) {
	switch c {
	case CipherChaCha20Poly1305:
		return chacha20poly1305.New(key[:])
	case CipherAES256GCM:
		b, err := aes.NewCipher(key[:])
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	}
	return nil, fmt.Errorf("unknown cipher %d", c)
}

// Record-layer errors. ErrAuth covers every way a record can fail to open: a
// bad tag, a length out of range, a replayed or reordered record. They are
// deliberately one error so no caller can react differently to them.
var (
	ErrAuth         = errors.New("record authentication failed")
	ErrKeyExhausted = errors.New("record key usage limit reached")
)

// counter is a 96-bit little-endian nonce counter with a usage limit.
type counter struct {
	nonce [NonceSize]byte
	n     uint64 // operations so far
	limit uint64
}

// next returns the nonce for the next AEAD operation and advances.
func (c *counter) next() ([]byte, error) {
	if c.n >= c.limit {
		return nil, ErrKeyExhausted
	}
	binary.LittleEndian.PutUint64(c.nonce[:8], c.n)
	c.n++
	return c.nonce[:], nil
}

// Sealer is the sending half of one direction. It is not safe for
// concurrent use: one stage owns it. Its first error is sticky.
type Sealer struct {
	aead cipher.AEAD
	ctr  counter
	keys keyState // the key behind aead, if s may rekey (record_keys.go)
	err  error
	lbuf [2]byte // length scratch; a field so it does not escape per record
}

// NewSealer returns a Sealer whose nonce counter starts at 0.
func NewSealer(a cipher.AEAD) *Sealer {
	return &Sealer{aead: a, ctr: counter{limit: DefaultRecordLimit}}
}

// SetLimit changes the number of AEAD operations the key may be used for.
// Tests use it to reach the limit.
func (s *Sealer) SetLimit(n uint64) { s.ctr.limit = n }

// Count is the number of AEAD operations done so far.
func (s *Sealer) Count() uint64 { return s.ctr.n }

// SealBox appends AEAD(plaintext) with the next nonce to dst. The handshake
// uses it for its boxes; records use Seal.
func (s *Sealer) SealBox(dst, plaintext []byte) ([]byte, error) {
	if s.err != nil {
		return dst, s.err
	}
	nonce, err := s.ctr.next()
	if err != nil {
		s.err = err
		return dst, err
	}
	return s.aead.Seal(dst, nonce, plaintext, nil), nil
}

// Seal appends one record to dst. body is the record body (one encoded
// frame); it must be FrameHeaderLen..MaxBodyLen bytes. body may alias the free capacity
// of dst only if it starts exactly at len(dst)+LengthBoxSize (SealFrame uses
// that to seal in place).
func (s *Sealer) Seal(dst, body []byte) ([]byte, error) {
	if len(body) < FrameHeaderLen || len(body) > MaxBodyLen {
		return dst, fmt.Errorf("record body of %d bytes out of range", len(body))
	}
	if s.err != nil {
		return dst, s.err
	}
	if s.ctr.limit-s.ctr.n < 2 || s.ctr.n > s.ctr.limit {
		s.err = ErrKeyExhausted
		return dst, s.err
	}
	binary.BigEndian.PutUint16(s.lbuf[:], uint16(len(body)))
	dst, _ = s.SealBox(dst, s.lbuf[:])
	nonce, _ := s.ctr.next()
	return s.aead.Seal(dst, nonce, body, nil), nil
}

// SealFrame encodes f with padLen bytes of padding and appends it to dst as
// one record, sealing in place without a temporary buffer.
func (s *Sealer) SealFrame(dst []byte, f *Frame, padLen int) ([]byte, error) {
	need := LengthBoxSize + FrameHeaderLen + len(f.Payload) + padLen + TagSize
	if cap(dst)-len(dst) < need {
		nd := make([]byte, len(dst), len(dst)+need+len(dst)/2)
		copy(nd, dst)
		dst = nd
	}
	start := len(dst)
	bodyStart := start + LengthBoxSize
	body := AppendFrame(dst[bodyStart:bodyStart], f, padLen)
	// Seal writes the length box at dst[start:bodyStart] and then the body,
	// which already sits where its ciphertext goes.
	out, err := s.Seal(dst[:start], body)
	if err != nil {
		return dst[:start], err
	}
	return out, nil
}

// Opener is the receiving half of one direction. It is not safe for
// concurrent use. Its first error is sticky: after ErrAuth nothing more is
// ever opened, because the attacker may not learn anything from a second try.
type Opener struct {
	aead    cipher.AEAD
	ctr     counter
	keys    keyState // the key behind aead, if o may rekey (record_keys.go)
	bodyLen int      // length of the record whose length box is open, or -1
	err     error
	lbuf    [2]byte // length scratch
}

// NewOpener returns an Opener whose nonce counter starts at 0.
func NewOpener(a cipher.AEAD) *Opener {
	return &Opener{aead: a, ctr: counter{limit: DefaultRecordLimit}, bodyLen: -1}
}

// SetLimit changes the number of AEAD operations the key may be used for.
func (o *Opener) SetLimit(n uint64) { o.ctr.limit = n }

// Count is the number of AEAD operations done so far.
func (o *Opener) Count() uint64 { return o.ctr.n }

// OpenBox opens one AEAD box of exactly len(box) bytes with the next nonce
// and appends the plaintext to dst. Any failure is ErrAuth and sticky.
func (o *Opener) OpenBox(dst, box []byte) ([]byte, error) {
	if o.err != nil {
		return dst, o.err
	}
	nonce, err := o.ctr.next()
	if err != nil {
		o.err = err
		return dst, err
	}
	out, err := o.aead.Open(dst, nonce, box, nil)
	if err != nil {
		o.err = ErrAuth
		return dst, o.err
	}
	return out, nil
}

// Need is how many bytes the next call to Open needs at the front of its
// input to make progress.
func (o *Opener) Need() int {
	if o.bodyLen < 0 {
		return LengthBoxSize
	}
	return LengthBoxSize + o.bodyLen + TagSize
}

// BodyLen opens the length box at the front of b, if it is not open yet,
// and returns the length of the record's body; -1 if b is too short to
// tell. It lets a caller pick a buffer before Open. Failures are ErrAuth,
// as in Open.
func (o *Opener) BodyLen(b []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	if o.bodyLen < 0 {
		if len(b) < LengthBoxSize {
			return -1, nil
		}
		lb, err := o.OpenBox(o.lbuf[:0], b[:LengthBoxSize])
		if err != nil {
			return 0, err
		}
		bl := int(binary.BigEndian.Uint16(lb))
		if bl < FrameHeaderLen {
			o.err = ErrAuth
			return 0, o.err
		}
		o.bodyLen = bl
	}
	return o.bodyLen, nil
}

// Open opens the record at the front of b. It returns the record body
// appended to dst and the number of bytes of b the record took. n == 0 with
// a nil error means b holds less than a whole record: call again with more.
// The body is acted on only after its own tag verified; the length is used
// only after the length box's tag verified, and a length below the frame
// header size is ErrAuth too.
//
// To decrypt in place pass dst = b[LengthBoxSize:LengthBoxSize].
func (o *Opener) Open(dst, b []byte) (out []byte, n int, err error) {
	if bl, err := o.BodyLen(b); err != nil || bl < 0 {
		return dst, 0, err
	}
	total := LengthBoxSize + o.bodyLen + TagSize
	if len(b) < total {
		return dst, 0, nil
	}
	out, err = o.OpenBox(dst, b[LengthBoxSize:total])
	if err != nil {
		return dst, 0, err
	}
	o.bodyLen = -1
	return out, total, nil
}
