package wire

import (
	"crypto/ecdh"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// Handshake of protocol v2 (SPEC-v2.md, "Handshake"). Each side sends one
// flight, in one write:
//
//	client: salt_c (32) | AEAD_hk_c2s(fixed, nonce 0) | AEAD_hk_c2s(var, nonce 1)
//	   fixed (11 B): type=1 (u8) | unix time (u64 BE) | len(var) (u16 BE)
//	   var:          cipher (u8) | X25519 public key (32) | extensions | padding
//	server: salt_s (32) | AEAD_hk_s2c(fixed, nonce 0) | AEAD_hk_s2c(var, nonce 1)
//	   fixed (43 B): type=2 (u8) | unix time (u64 BE) | salt_c (32) | len(var) (u16 BE)
//	   var:          X25519 public key (32) | extensions | padding
//
// Handshake boxes are always ChaCha20-Poly1305 (the data cipher is chosen by
// the client inside its var header). The handshake keys hk_c2s and hk_s2c come
// from the PSK and the salts (keys.go); the data keys mix in the X25519
// shared secret (DeriveSessionKeys).

// Handshake sizes.
const (
	SaltSize       = 32
	PublicKeySize  = 32
	clientFixedLen = 1 + 8 + 2
	serverFixedLen = 1 + 8 + SaltSize + 2
	clientVarMin   = 1 + PublicKeySize
	serverVarMin   = PublicKeySize
	// ClientPrefixLen is what the server reads before it knows the length
	// of the rest: salt and sealed fixed header.
	ClientPrefixLen = SaltSize + clientFixedLen + TagSize
	// ServerPrefixLen is the same for the server's reply.
	ServerPrefixLen = SaltSize + serverFixedLen + TagSize
	// MaxHandshakePad is the most a var header may carry after its fixed
	// fields: extensions and padding together (room for an ML-KEM-768 key
	// or ciphertext and the full padding range).
	MaxHandshakePad = 4096
)

// Handshake message types (inside the sealed fixed header).
const (
	helloClient byte = 1
	helloServer byte = 2
)

// ErrHandshake is every handshake failure that an attacker could cause: bad
// tag, wrong type, wrong length. Servers react to all of them the same way.
var ErrHandshake = errors.New("handshake authentication failed")

// ClientHello is the content of the client's first flight.
type ClientHello struct {
	Salt   [SaltSize]byte
	Time   uint64 // unix seconds
	Cipher CipherID
	Public [PublicKeySize]byte
	Ext    Extensions
	PadLen int
}

// ServerHello is the content of the server's reply.
type ServerHello struct {
	Salt       [SaltSize]byte
	Time       uint64
	ClientSalt [SaltSize]byte // echoes the client's salt: binds reply to request
	Public     [PublicKeySize]byte
	Ext        Extensions
	PadLen     int
}

func handshakeAEAD(key *[KeySize]byte) *Sealer {
	a, err := chacha20poly1305.New(key[:])
	if err != nil {
		panic(err) // key size is fixed
	}
	return NewSealer(a)
}

func handshakeOpener(key *[KeySize]byte) *Opener {
	a, err := chacha20poly1305.New(key[:])
	if err != nil {
		panic(err)
	}
	return NewOpener(a)
}

// AppendClientHello appends the client's whole first flight to dst.
func AppendClientHello(dst []byte, psk *PSK, h *ClientHello) []byte {
	if h.PadLen < 0 || h.PadLen+h.Ext.encodedLen() > MaxHandshakePad {
		panic("wire: handshake padding out of range")
	}
	hk := ClientHandshakeKey(psk, &h.Salt)
	s := handshakeAEAD(&hk)
	varLen := clientVarMin + h.Ext.encodedLen() + h.PadLen
	var fixed [clientFixedLen]byte
	fixed[0] = helloClient
	binary.BigEndian.PutUint64(fixed[1:9], h.Time)
	binary.BigEndian.PutUint16(fixed[9:11], uint16(varLen))
	dst = append(dst, h.Salt[:]...)
	dst, _ = s.SealBox(dst, fixed[:])
	v := make([]byte, 0, varLen)
	v = append(v, byte(h.Cipher))
	v = append(v, h.Public[:]...)
	v = h.Ext.appendTo(v)
	v = append(v, make([]byte, h.PadLen)...)
	dst, _ = s.SealBox(dst, v)
	return dst
}

// ClientHelloReader opens a client's first flight in two steps, as the
// bytes arrive: OpenPrefix on the first ClientPrefixLen bytes says how many
// more to read; OpenRest opens them.
type ClientHelloReader struct {
	psk    *PSK
	open   *Opener
	hello  ClientHello
	varLen int
}

// NewClientHelloReader prepares to open one client flight.
func NewClientHelloReader(psk *PSK) *ClientHelloReader {
	return &ClientHelloReader{psk: psk}
}

// OpenPrefix opens salt and fixed header and returns the number of bytes
// still to read. Any failure is ErrHandshake.
func (r *ClientHelloReader) OpenPrefix(b []byte) (rest int, err error) {
	if len(b) != ClientPrefixLen {
		return 0, ErrHandshake
	}
	copy(r.hello.Salt[:], b[:SaltSize])
	hk := ClientHandshakeKey(r.psk, &r.hello.Salt)
	open := handshakeOpener(&hk)
	var buf [clientFixedLen]byte
	fixed, err := open.OpenBox(buf[:0], b[SaltSize:])
	if err != nil || fixed[0] != helloClient {
		return 0, ErrHandshake
	}
	varLen := int(binary.BigEndian.Uint16(fixed[9:11]))
	if varLen < clientVarMin || varLen > clientVarMin+MaxHandshakePad {
		return 0, ErrHandshake
	}
	r.open, r.varLen = open, varLen
	r.hello.Time = binary.BigEndian.Uint64(fixed[1:9])
	return r.varLen + TagSize, nil
}

// Time is the client's timestamp, known after OpenPrefix. The server checks
// it before spending more work.
func (r *ClientHelloReader) Time() uint64 { return r.hello.Time }

// Salt is the client's salt, known after OpenPrefix.
func (r *ClientHelloReader) Salt() [SaltSize]byte { return r.hello.Salt }

// OpenRest opens the var header and returns the whole hello.
func (r *ClientHelloReader) OpenRest(b []byte) (*ClientHello, error) {
	if r.open == nil || len(b) != r.varLen+TagSize {
		return nil, ErrHandshake
	}
	v, err := r.open.OpenBox(nil, b)
	r.open = nil // one use only
	if err != nil || len(v) < clientVarMin {
		return nil, ErrHandshake
	}
	r.hello.Cipher = CipherID(v[0])
	copy(r.hello.Public[:], v[1:1+PublicKeySize])
	if r.hello.Ext, r.hello.PadLen, err = parseExtensions(v[clientVarMin:]); err != nil {
		return nil, err
	}
	return &r.hello, nil
}

// AppendServerHello appends the server's whole reply flight to dst.
func AppendServerHello(dst []byte, psk *PSK, h *ServerHello) []byte {
	if h.PadLen < 0 || h.PadLen+h.Ext.encodedLen() > MaxHandshakePad {
		panic("wire: handshake padding out of range")
	}
	hk := ServerHandshakeKey(psk, &h.ClientSalt, &h.Salt)
	s := handshakeAEAD(&hk)
	varLen := serverVarMin + h.Ext.encodedLen() + h.PadLen
	var fixed [serverFixedLen]byte
	fixed[0] = helloServer
	binary.BigEndian.PutUint64(fixed[1:9], h.Time)
	copy(fixed[9:9+SaltSize], h.ClientSalt[:])
	binary.BigEndian.PutUint16(fixed[9+SaltSize:], uint16(varLen))
	dst = append(dst, h.Salt[:]...)
	dst, _ = s.SealBox(dst, fixed[:])
	v := make([]byte, 0, varLen)
	v = append(v, h.Public[:]...)
	v = h.Ext.appendTo(v)
	v = append(v, make([]byte, h.PadLen)...)
	dst, _ = s.SealBox(dst, v)
	return dst
}

// ServerHelloReader opens a server's reply on the client, checking that it
// answers this client's salt.
type ServerHelloReader struct {
	psk    *PSK
	saltC  [SaltSize]byte
	open   *Opener
	hello  ServerHello
	varLen int
}

// NewServerHelloReader prepares to open the reply to the hello whose salt is
// saltC.
func NewServerHelloReader(psk *PSK, saltC [SaltSize]byte) *ServerHelloReader {
	return &ServerHelloReader{psk: psk, saltC: saltC}
}

// OpenPrefix opens the server salt and fixed header; it returns how many
// more bytes to read.
func (r *ServerHelloReader) OpenPrefix(b []byte) (rest int, err error) {
	if len(b) != ServerPrefixLen {
		return 0, ErrHandshake
	}
	copy(r.hello.Salt[:], b[:SaltSize])
	hk := ServerHandshakeKey(r.psk, &r.saltC, &r.hello.Salt)
	open := handshakeOpener(&hk)
	var buf [serverFixedLen]byte
	fixed, err := open.OpenBox(buf[:0], b[SaltSize:])
	if err != nil || fixed[0] != helloServer {
		return 0, ErrHandshake
	}
	if subtle.ConstantTimeCompare(fixed[9:9+SaltSize], r.saltC[:]) != 1 {
		return 0, ErrHandshake
	}
	varLen := int(binary.BigEndian.Uint16(fixed[9+SaltSize:]))
	if varLen < serverVarMin || varLen > serverVarMin+MaxHandshakePad {
		return 0, ErrHandshake
	}
	r.open, r.varLen = open, varLen
	r.hello.ClientSalt = r.saltC
	r.hello.Time = binary.BigEndian.Uint64(fixed[1:9])
	return r.varLen + TagSize, nil
}

// OpenRest opens the var header and returns the whole reply.
func (r *ServerHelloReader) OpenRest(b []byte) (*ServerHello, error) {
	if r.open == nil || len(b) != r.varLen+TagSize {
		return nil, ErrHandshake
	}
	v, err := r.open.OpenBox(nil, b)
	r.open = nil // one use only
	if err != nil || len(v) < serverVarMin {
		return nil, ErrHandshake
	}
	copy(r.hello.Public[:], v[:PublicKeySize])
	if r.hello.Ext, r.hello.PadLen, err = parseExtensions(v[serverVarMin:]); err != nil {
		return nil, err
	}
	return &r.hello, nil
}

// Ephemeral is one side's X25519 key pair for one handshake.
type Ephemeral struct {
	priv *ecdh.PrivateKey
}

// NewEphemeral draws a key pair from rand.
func NewEphemeral(rand io.Reader) (*Ephemeral, error) {
	var seed [32]byte
	if _, err := io.ReadFull(rand, seed[:]); err != nil {
		return nil, err
	}
	k, err := ecdh.X25519().NewPrivateKey(seed[:])
	if err != nil {
		return nil, err
	}
	return &Ephemeral{priv: k}, nil
}

// Public is the public key to put in the hello.
func (e *Ephemeral) Public() [PublicKeySize]byte {
	var p [PublicKeySize]byte
	copy(p[:], e.priv.PublicKey().Bytes())
	return p
}

// Shared computes the X25519 shared secret with the peer's public key. A
// low-order peer key (all-zero result) is ErrHandshake.
func (e *Ephemeral) Shared(peer [PublicKeySize]byte) ([]byte, error) {
	pk, err := ecdh.X25519().NewPublicKey(peer[:])
	if err != nil {
		return nil, ErrHandshake
	}
	s, err := e.priv.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	return s, nil
}
