package v1

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
)

// Tunnel message constants (spec §4.1).
const (
	// Version is the only tunnel version, the first byte of a message.
	Version = 1
	// TunnelHeaderLen is the size of a tunnel message header: version,
	// flags and the 16-bit connection id.
	TunnelHeaderLen = 4
	// MaxPayload is the most payload the original puts in one message
	// (one 4096-byte read of a socket). Receivers accept more.
	MaxPayload = 4096
)

// Errors of the tunnel message codec. Compare with errors.Is.
var (
	// ErrShortMessage: a record message shorter than 4 bytes (the
	// original crashed with struct.error).
	ErrShortMessage = errors.New("usocks/v1: tunnel message shorter than 4 bytes")
	// ErrBadVersion: the version byte is not 1 (original
	// UnsupportVersionError). Treat it as a protocol error.
	ErrBadVersion = errors.New("usocks/v1: unsupported tunnel version")
)

// Flags is the flags byte of a tunnel message. The low four bits are
// SYN, DAT, FIN and RST; the upper four are reserved, sent as 0 and
// never acted on by a receiver.
type Flags uint8

// The tunnel flags.
const (
	// SYN opens a stream (the server connects to its target).
	SYN Flags = 0x01
	// DAT means the payload carries stream data.
	DAT Flags = 0x02
	// FIN closes a stream; the peer answers with FIN.
	FIN Flags = 0x04
	// RST resets a stream; the peer answers with RST.
	RST Flags = 0x08
	// FlagsMask holds the four defined bits; the rest are reserved.
	FlagsMask = SYN | DAT | FIN | RST
)

// Has reports whether every bit of g is set in f.
func (f Flags) Has(g Flags) bool { return f&g == g }

// String returns the set flags joined by "|" in bit order, for example
// "SYN|DAT", with reserved bits as a hex number ("DAT|0x10"), and "0"
// when no bit is set.
func (f Flags) String() string {
	if f == 0 {
		return "0"
	}
	var parts []string
	for _, n := range [...]struct {
		f    Flags
		name string
	}{{SYN, "SYN"}, {DAT, "DAT"}, {FIN, "FIN"}, {RST, "RST"}} {
		if f.Has(n.f) {
			parts = append(parts, n.name)
		}
	}
	if r := f &^ FlagsMask; r != 0 {
		parts = append(parts, "0x"+strconv.FormatUint(uint64(r), 16))
	}
	return strings.Join(parts, "|")
}

// Message is one tunnel message: the contents of one record-layer
// message (spec §4.1).
type Message struct {
	// Flags as received; reserved bits are kept on parse and cleared
	// by AppendMessage.
	Flags Flags
	// ID is the connection id, 1 to 65534 when the original client
	// chose it.
	ID uint16
	// Payload is the stream data; it means something only with DAT.
	Payload []byte
}

// AppendMessage appends the encoding of m to dst: version 1, the flags
// with reserved bits cleared, the id big-endian, then the payload.
func AppendMessage(dst []byte, m Message) []byte {
	dst = append(dst, Version, byte(m.Flags&FlagsMask), byte(m.ID>>8), byte(m.ID))
	return append(dst, m.Payload...)
}

// ParseMessage decodes one tunnel message. The returned Payload aliases
// b. It fails with ErrShortMessage for fewer than 4 bytes and with
// ErrBadVersion when the version byte is not 1.
func ParseMessage(b []byte) (Message, error) {
	if len(b) < TunnelHeaderLen {
		return Message{}, ErrShortMessage
	}
	if b[0] != Version {
		return Message{}, ErrBadVersion
	}
	return Message{
		Flags:   Flags(b[1]),
		ID:      binary.BigEndian.Uint16(b[2:4]),
		Payload: b[TunnelHeaderLen:],
	}, nil
}
