package v1

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// Record-layer sizes (spec §3.3).
const (
	// BlockSize is the AES block size. Every record-layer write, the
	// sync block included, is a whole number of blocks.
	BlockSize = 16
	// RecordHeaderLen is the size of a packet header: L (2), P (1), T (1).
	RecordHeaderLen = 4
	// DigestLen is the size of the truncated MD5 digest ending a packet.
	DigestLen = 8
	// RecordOverhead is the header plus the digest: the bytes a packet
	// adds around its data and padding.
	RecordOverhead = RecordHeaderLen + DigestLen
	// MaxDataLen is the largest L a packet can carry.
	MaxDataLen = 65535
	// MaxPaddingLen is the largest P a packet can carry.
	MaxPaddingLen = 255
	// PartLen is the amount of data the original puts in each part
	// packet: 65524 + 12 = 65536 fills whole blocks with P = 0.
	PartLen = 65524
	// MaxPacketLen is the largest packet a valid header can announce:
	// the largest multiple of 16 not above 4 + 65535 + 255 + 8.
	MaxPacketLen = (RecordOverhead + MaxDataLen + MaxPaddingLen) / BlockSize * BlockSize
	// MaxMessageSize caps the size of a message a receiver will
	// assemble from part packets. The original has no limit; this
	// package refuses a message that would grow beyond 16 MiB with
	// ErrMessageTooLarge (an invalid-header class error). The original
	// itself never sends messages larger than 4100 bytes.
	MaxMessageSize = 16 << 20
)

// PacketType is the record packet type, the T byte of the header
// (spec §3.4).
type PacketType uint8

// The packet types of protocol v1.
const (
	// PacketData is the last (or only) piece of a message.
	PacketData PacketType = 1
	// PacketPart is a non-final piece of a message.
	PacketPart PacketType = 2
	// PacketNodata is filler without data; the original never sends it.
	PacketNodata PacketType = 3
	// PacketReset tells the receiver to tear the channel down at once.
	PacketReset PacketType = 254
	// PacketClose announces that the sender is about to close cleanly.
	PacketClose PacketType = 255
)

// String returns the spec's name for t ("data", "part", "nodata",
// "reset", "close"), or "PacketType(n)" for an unknown value.
func (t PacketType) String() string {
	switch t {
	case PacketData:
		return "data"
	case PacketPart:
		return "part"
	case PacketNodata:
		return "nodata"
	case PacketReset:
		return "reset"
	case PacketClose:
		return "close"
	}
	return "PacketType(" + strconv.Itoa(int(t)) + ")"
}

// Valid reports whether t is one of the five types a receiver accepts.
func (t PacketType) Valid() bool {
	switch t {
	case PacketData, PacketPart, PacketNodata, PacketReset, PacketClose:
		return true
	}
	return false
}

// carriesData reports whether packets of type t may have L > 0.
func (t PacketType) carriesData() bool {
	return t == PacketData || t == PacketPart
}

// Errors of the record layer. Compare with errors.Is.
var (
	// ErrHashFail: a packet's digest was wrong (original HashfailError).
	// The receiver should send a reset packet.
	ErrHashFail = errors.New("usocks/v1: record digest mismatch")
	// ErrInvalidHeader: a packet header broke a rule of spec §3.6
	// (original InvalidHeaderError). The receiver should send a reset.
	ErrInvalidHeader = errors.New("usocks/v1: invalid record header")
	// ErrMessageTooLarge: part packets would assemble a message larger
	// than MaxMessageSize. It matches ErrInvalidHeader with errors.Is.
	ErrMessageTooLarge = fmt.Errorf("%w: message exceeds %d bytes", ErrInvalidHeader, MaxMessageSize)
	// ErrFirstPacketIncorrect: the header or digest check failed before
	// any packet of this direction passed its digest check (original
	// FirstPacketIncorrectError): a wrong key or a stranger. The
	// receiver must not answer; it closes silently. An error of this
	// kind does not match ErrHashFail or ErrInvalidHeader.
	ErrFirstPacketIncorrect = errors.New("usocks/v1: first record packet incorrect")
	// ErrRemoteReset: the peer sent a reset packet (original
	// RemoteResetException). Tear down at once, without replying.
	ErrRemoteReset = errors.New("usocks/v1: reset by peer")
	// ErrConnectionClosed: end of stream after a close packet (original
	// ConnectionClosedException). This is the normal, secure end.
	ErrConnectionClosed = errors.New("usocks/v1: connection closed")
	// ErrInsecureClose: end of stream without a close packet (original
	// InsecureClosingError). The stream may have been truncated.
	ErrInsecureClose = errors.New("usocks/v1: connection closed without a close packet")
	// ErrNeedMore is returned by Opener.Next when no further event can
	// be produced until more ciphertext is fed. It is not sticky.
	ErrNeedMore = errors.New("usocks/v1: need more input")
	// ErrPacketLayout: an encoder was asked for a packet whose lengths
	// are out of range or not block aligned.
	ErrPacketLayout = errors.New("usocks/v1: invalid packet layout")
)

// firstPacketError is the error returned for a failure before the first
// verified packet. It matches ErrFirstPacketIncorrect only, so that a
// caller testing for ErrHashFail or ErrInvalidHeader does not send a reset.
type firstPacketError struct{ cause error }

// Error names the first-packet failure and its underlying cause.
func (e firstPacketError) Error() string {
	return ErrFirstPacketIncorrect.Error() + " (" + e.cause.Error() + ")"
}

// Is matches ErrFirstPacketIncorrect, and nothing else.
func (e firstPacketError) Is(target error) bool { return target == ErrFirstPacketIncorrect }

// NeedsReset reports whether err is a receive error after which the
// receiver must send a reset packet: ErrHashFail or ErrInvalidHeader
// (which includes ErrMessageTooLarge). It is false for
// ErrFirstPacketIncorrect, ErrRemoteReset and the end-of-stream errors.
func NeedsReset(err error) bool {
	return errors.Is(err, ErrHashFail) || errors.Is(err, ErrInvalidHeader)
}

// PaddingLen returns the padding the original adds to a data packet of n
// bytes: (16 - (n+12) mod 16) mod 16, between 0 and 15.
func PaddingLen(n int) int {
	return (BlockSize - (n+RecordOverhead)%BlockSize) % BlockSize
}

// SealedLen returns the number of ciphertext bytes AppendMessage
// produces for a message of n bytes (the sync block not included).
func SealedLen(n int) int {
	total := 0
	for n > MaxDataLen {
		total += PartLen + RecordOverhead
		n -= PartLen
	}
	return total + n + RecordOverhead + PaddingLen(n)
}

// digest returns the first 8 bytes of MD5(b).
func digest(b []byte) [DigestLen]byte {
	sum := md5.Sum(b)
	return [DigestLen]byte(sum[:DigestLen])
}

// Sealer is the sending half of one direction of a record channel: a
// single AES-128-CBC chain that runs for the life of the backend
// (spec §3.1, §3.5). The stream starts with the sync block returned by
// Sync; every Append method then encrypts whole packets as the
// continuation of the chain and appends the ciphertext to dst.
//
// A Sealer is not safe for concurrent use. Its methods never fail on
// I/O: they only compute bytes, the caller writes them out in order.
type Sealer struct {
	enc  cipher.BlockMode
	sync [BlockSize]byte
}

// NewSealer reproduces the original's sender start exactly: CBC with
// the given iv, whose first block is the random block syncPlain, so
// that the first 16 bytes sent are C0 = AES_K(syncPlain xor iv), and
// all later packets chain from C0. Use it to reproduce test vectors;
// production code can use NewRandomSealer.
func NewSealer(key [KeySize]byte, iv, syncPlain [BlockSize]byte) *Sealer {
	block := newBlock(key)
	var c0 [BlockSize]byte
	subtle.XORBytes(c0[:], syncPlain[:], iv[:])
	block.Encrypt(c0[:], c0[:])
	return newSealerC0(block, c0)
}

// NewRandomSealer starts a sending chain whose sync block C0 is 16
// bytes read from rand. Spec §3.1 allows this: C0 then has exactly the
// distribution of the original's AES_K(S xor IV).
func NewRandomSealer(key [KeySize]byte, rand io.Reader) (*Sealer, error) {
	var c0 [BlockSize]byte
	if _, err := io.ReadFull(rand, c0[:]); err != nil {
		return nil, fmt.Errorf("usocks/v1: reading sync block: %w", err)
	}
	return newSealerC0(newBlock(key), c0), nil
}

func newSealerC0(block cipher.Block, c0 [BlockSize]byte) *Sealer {
	return &Sealer{enc: cipher.NewCBCEncrypter(block, c0[:]), sync: c0}
}

func newBlock(key [KeySize]byte) cipher.Block {
	block, err := aes.NewCipher(key[:])
	if err != nil { // cannot happen: the key has a valid size
		panic(err)
	}
	return block
}

// Sync returns a copy of the 16-byte sync block C0, which must be the
// first bytes of the stream. The original sends it together with the
// first packet (spec §3.2).
func (s *Sealer) Sync() []byte {
	return slices.Clone(s.sync[:])
}

// AppendMessage encrypts one message (one tunnel message) exactly as the
// original sends it and appends the ciphertext to dst: while more than
// 65535 bytes remain, a part packet of 65524 bytes with no padding;
// then one data packet with PaddingLen(n) padding bytes, each of value
// PaddingLen(n). An empty message is one 16-byte data packet.
func (s *Sealer) AppendMessage(dst, msg []byte) []byte {
	for len(msg) > MaxDataLen {
		dst = s.appendPacket(dst, PacketPart, msg[:PartLen], nil)
		msg = msg[PartLen:]
	}
	var pad [BlockSize]byte
	p := PaddingLen(len(msg))
	for i := range p {
		pad[i] = byte(p)
	}
	return s.appendPacket(dst, PacketData, msg, pad[:p])
}

// AppendClose appends a close packet (L = 0, P = 4, one block). pad
// should be 4 random bytes. Send it, flush, then close the backend.
func (s *Sealer) AppendClose(dst []byte, pad [4]byte) []byte {
	return s.appendPacket(dst, PacketClose, nil, pad[:])
}

// AppendReset appends a reset packet (L = 0, P = 4, one block). pad
// should be 4 random bytes.
func (s *Sealer) AppendReset(dst []byte, pad [4]byte) []byte {
	return s.appendPacket(dst, PacketReset, nil, pad[:])
}

// AppendNodata appends a nodata (filler) packet with the given padding,
// whose length must be 4 modulo 16 and at most 255 (ErrPacketLayout
// otherwise; dst is then returned unchanged).
func (s *Sealer) AppendNodata(dst, padding []byte) ([]byte, error) {
	return s.AppendRaw(dst, PacketNodata, nil, padding)
}

// AppendRaw appends a packet with arbitrary type, data and padding, as
// the original's internal packet writer does. It checks only what is
// needed to frame it: len(data) <= 65535, len(padding) <= 255 and
// 12+len(data)+len(padding) a multiple of 16; otherwise it returns dst
// unchanged and ErrPacketLayout. It exists to build test streams (for
// example invalid types); normal senders use AppendMessage.
func (s *Sealer) AppendRaw(dst []byte, typ PacketType, data, padding []byte) ([]byte, error) {
	if len(data) > MaxDataLen || len(padding) > MaxPaddingLen ||
		(RecordOverhead+len(data)+len(padding))%BlockSize != 0 {
		return dst, ErrPacketLayout
	}
	return s.appendPacket(dst, typ, data, padding), nil
}

// AppendPlain encrypts a hand-built plaintext (header, data, padding
// and digest already laid out by the caller, any content) as the
// continuation of the chain. len(plain) must be a multiple of 16
// (ErrPacketLayout otherwise). It exists to build damaged test streams.
func (s *Sealer) AppendPlain(dst, plain []byte) ([]byte, error) {
	if len(plain)%BlockSize != 0 {
		return dst, ErrPacketLayout
	}
	start := len(dst)
	dst = append(dst, plain...)
	s.enc.CryptBlocks(dst[start:], dst[start:])
	return dst, nil
}

// appendPacket lays out header || data || padding || digest at the end
// of dst and encrypts it in place. The lengths must already be valid.
func (s *Sealer) appendPacket(dst []byte, typ PacketType, data, padding []byte) []byte {
	start := len(dst)
	dst = slices.Grow(dst, RecordOverhead+len(data)+len(padding))
	dst = append(dst, byte(len(data)>>8), byte(len(data)), byte(len(padding)), byte(typ))
	dst = append(dst, data...)
	dst = append(dst, padding...)
	sum := digest(dst[start:])
	dst = append(dst, sum[:]...)
	s.enc.CryptBlocks(dst[start:], dst[start:])
	return dst
}
