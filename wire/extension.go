package wire

import "encoding/binary"

// Handshake extensions (SPEC-v2.md §3, "Extensions"). After the fixed
// fields of a var header comes a list of extensions, then padding:
//
//	extension: type (u8, ≠ 0) | len (u16 BE) | value (len bytes)
//
// A zero type byte, or the end of the var header, ends the list; every
// byte after a zero type byte is padding. Padding is zeros when we send it,
// but a receiver ignores its content. A var header without extensions is
// therefore byte-identical to the one of the first v2 version.
//
// Receiver rules: an extension that runs past the end of the header, or a
// type that appears twice, fails the handshake (ErrHandshake); unknown
// types are skipped.

// ExtType names a handshake extension.
type ExtType byte

// Known extension types.
const (
	// ExtDefence carries the traffic-analysis defence policy: in the
	// client hello the policy the client asks for, in the server hello the
	// policy both sides then use (SPEC-v2.md §7a). Value: policy (u8).
	ExtDefence ExtType = 1
	// ExtKEM carries the post-quantum key exchange (SPEC-v2.md §2a): in
	// the client hello an ML-KEM-768 encapsulation key (1184 bytes), in
	// the server hello the ciphertext for it (1088 bytes).
	ExtKEM ExtType = 2
)

// extHeaderLen is the type and length of one extension.
const extHeaderLen = 3

// Extension is one handshake extension.
type Extension struct {
	Type  ExtType
	Value []byte
}

// Extensions is a var header's extension list, in order.
type Extensions []Extension

// Get returns the value of the extension of type t.
func (e Extensions) Get(t ExtType) ([]byte, bool) {
	for _, x := range e {
		if x.Type == t {
			return x.Value, true
		}
	}
	return nil, false
}

// encodedLen is the size of the list on the wire.
func (e Extensions) encodedLen() int {
	n := 0
	for _, x := range e {
		n += extHeaderLen + len(x.Value)
	}
	return n
}

// appendTo appends the encoded list. It panics on a zero type or a value
// longer than a u16 can say: both are programming errors.
func (e Extensions) appendTo(dst []byte) []byte {
	for _, x := range e {
		if x.Type == 0 || len(x.Value) > 0xffff {
			panic("wire: bad handshake extension")
		}
		dst = append(dst, byte(x.Type))
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(x.Value)))
		dst = append(dst, x.Value...)
	}
	return dst
}

// parseExtensions reads the list at the start of b. It returns the list
// (values alias b) and how many bytes follow it (the padding, counting the
// zero type byte that ended the list).
func parseExtensions(b []byte) (Extensions, int, error) {
	var exts Extensions
	for len(b) > 0 && b[0] != 0 {
		if len(b) < extHeaderLen {
			return nil, 0, ErrHandshake
		}
		t := ExtType(b[0])
		n := int(binary.BigEndian.Uint16(b[1:3]))
		if len(b) < extHeaderLen+n {
			return nil, 0, ErrHandshake
		}
		if _, dup := exts.Get(t); dup {
			return nil, 0, ErrHandshake
		}
		exts = append(exts, Extension{Type: t, Value: b[extHeaderLen : extHeaderLen+n]})
		b = b[extHeaderLen+n:]
	}
	return exts, len(b), nil
}
