package wire

import (
	"encoding/binary"
	"errors"
)

// SYN targets (SPEC-v2.md §6e). A client that answers the app's proxy
// request itself (client-side SOCKS5 or HTTP proxy) names the target in
// the payload of the stream's SYN frame, sent without DAT:
//
//	ATYP (u8) | ADDR | PORT (u16 BE)
//
// ATYP 1: ADDR is an IPv4 address, 4 bytes. ATYP 3: ADDR is a name, one
// length byte (1..255) and the name. ATYP 4: ADDR is an IPv6 address, 16
// bytes. These are SOCKS5's address types and layout (RFC 1928 §5). The
// target fills the payload exactly: trailing bytes are malformed.

// Target address types.
const (
	TargetIPv4 byte = 1
	TargetName byte = 3
	TargetIPv6 byte = 4
)

// MaxTargetLen is the longest encoded target (a 255-byte name).
const MaxTargetLen = 1 + 1 + 255 + 2

// ErrBadTarget is a SYN payload that is not one well-formed target.
var ErrBadTarget = errors.New("malformed SYN target")

// Target is where a client-side proxy wants a stream connected.
type Target struct {
	Type byte   // TargetIPv4, TargetName or TargetIPv6
	Addr []byte // 4 bytes, the name (1..255 bytes), or 16 bytes
	Port uint16
}

// AppendTarget appends the encoding of t; ErrBadTarget if Addr does not
// fit Type.
func AppendTarget(b []byte, t Target) ([]byte, error) {
	switch {
	case t.Type == TargetIPv4 && len(t.Addr) == 4, t.Type == TargetIPv6 && len(t.Addr) == 16:
		b = append(b, t.Type)
	case t.Type == TargetName && len(t.Addr) >= 1 && len(t.Addr) <= 255:
		b = append(b, t.Type, byte(len(t.Addr)))
	default:
		return b, ErrBadTarget
	}
	b = append(b, t.Addr...)
	return binary.BigEndian.AppendUint16(b, t.Port), nil
}

// ParseTarget decodes a SYN payload. Addr aliases p. A name is returned
// as sent: checking that it is a host name is the receiver's job.
func ParseTarget(p []byte) (Target, error) {
	if len(p) < 1 {
		return Target{}, ErrBadTarget
	}
	t := Target{Type: p[0]}
	switch t.Type {
	case TargetIPv4:
		if len(p) != 1+4+2 {
			return Target{}, ErrBadTarget
		}
		t.Addr = p[1:5]
	case TargetIPv6:
		if len(p) != 1+16+2 {
			return Target{}, ErrBadTarget
		}
		t.Addr = p[1:17]
	case TargetName:
		if len(p) < 2 || p[1] == 0 || len(p) != 2+int(p[1])+2 {
			return Target{}, ErrBadTarget
		}
		t.Addr = p[2 : 2+int(p[1])]
	default:
		return Target{}, ErrBadTarget
	}
	t.Port = binary.BigEndian.Uint16(p[len(p)-2:])
	return t, nil
}
