package stages

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

// The v2 handshake over a backend connection (SPEC-v2.md, "Handshake" and
// "Probe resistance"). It runs before the stages start: its result is the
// key state the record stages own.

// Keys is the outcome of a handshake: the record state of both
// directions. The data keys are inside Seal and Open (which rekey
// themselves), nowhere else.
type Keys struct {
	Seal   *wire.Sealer
	Open   *wire.Opener
	Cipher wire.CipherID
	// Defence is the traffic-analysis defence policy both sides agreed on.
	Defence wire.DefencePolicy
	// User is the client's identity on a multi-user server (the zero id
	// otherwise); the server's per-user limits are keyed by it.
	User wire.UserID
	// Resume is the resumption both hellos carried (SPEC-v2.md §7b);
	// nil when the peer does not resume sessions.
	Resume *Resumption
}

// Handshake padding ranges: the client's first flight is
// 108 + U[0, clientPadMax) bytes, the server's reply 139 + U[0, serverPadMax);
// a defence extension adds 4 bytes to either, an identity hint 16 to the
// client's, a printable prefix its length.
const (
	clientPadMax = 1300
	serverPadMax = 1000
)

// DefaultSkew is the accepted clock difference between client and server.
const DefaultSkew = 30 * time.Second

// randInt returns a uniform integer in [0, n) from r.
func randInt(r io.Reader, n int) (int, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	return int(binary.LittleEndian.Uint64(b[:]) % uint64(n)), nil
}

// ClientHandshake is the client's side of the handshake.
type ClientHandshake struct {
	PSK    *wire.PSK
	Cipher wire.CipherID
	Rand   io.Reader
	Now    func() time.Time
	Skew   time.Duration
	// Timeout bounds waiting for the server's reply.
	Timeout time.Duration
	// Identity, if set, is the server's identity key: the flight then
	// carries an identity hint for PSK, the user key (multi-user servers).
	Identity *wire.PSK
	// Prefix, if set, is sent before the first flight, in the same write
	// (SPEC-v2.md §3b: printable bytes that exempt the flight from
	// fully-encrypted-traffic rules). The server must expect the same.
	Prefix []byte
	// Defence is the defence policy the client asks for (SPEC-v2.md §7a).
	Defence wire.DefencePolicy
	// PostQuantum adds an ML-KEM-768 key exchange beside X25519
	// (SPEC-v2.md §2a); the server must answer it.
	PostQuantum bool
	// KeyLog, if set, is told the session's data keys (a plaintext
	// capture records them, like SSLKEYLOGFILE). nil in normal use.
	KeyLog func(c net.Conn, k *wire.SessionKeys, cipher wire.CipherID)
	// Resume, if set, is the resume extension to send (SPEC-v2.md §7b):
	// the session id and the numbered frames received so far.
	Resume *wire.ClientResume
}

// ErrServerAuth means the reply did not come from a server holding the key
// for this very handshake (wrong key, splice, replayed reply, clock).
var ErrServerAuth = errors.New("server failed to authenticate (wrong key, or not a usocks v2 server)")

// Run sends the first flight in one write and checks the server's reply.
func (h *ClientHandshake) Run(ctx context.Context, c net.Conn) (*Keys, error) {
	eph, err := wire.NewEphemeral(h.Rand)
	if err != nil {
		return nil, err
	}
	hello := wire.ClientHello{Time: uint64(h.Now().Unix()), Cipher: h.Cipher, Public: eph.Public()}
	if h.Defence != wire.DefenceOff {
		hello.Ext = wire.Extensions{wire.DefenceExt(h.Defence)}
	}
	if _, err := io.ReadFull(h.Rand, hello.Salt[:]); err != nil {
		return nil, err
	}
	dk, err := h.kemKey()
	if err != nil {
		return nil, err
	}
	if dk != nil {
		hello.Ext = append(hello.Ext, wire.KEMExt(dk.EncapsulationKey()))
	}
	if h.Resume != nil {
		hello.Ext = append(hello.Ext, h.Resume.Exts()...)
	}
	if hello.PadLen, err = randInt(h.Rand, clientPadMax); err != nil {
		return nil, err
	}
	flight := wire.AppendClientHello(append([]byte(nil), h.Prefix...), h.PSK, &hello)
	if h.Identity != nil {
		eih := wire.SealIdentityHint(h.Identity, &hello.Salt, h.PSK)
		at := len(h.Prefix) + wire.SaltSize
		flight = append(flight[:at], append(eih[:], flight[at:]...)...)
	}
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	defer c.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write(flight); err != nil {
		return nil, &BackendError{Op: "write", Err: err}
	}
	r := wire.NewServerHelloReader(h.PSK, hello.Salt)
	prefix := make([]byte, wire.ServerPrefixLen)
	if _, err := io.ReadFull(c, prefix); err != nil {
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fmt.Errorf("%w: server closed the connection", ErrServerAuth)
		case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil:
			// A server that does not know our key stays silent on purpose.
			return nil, fmt.Errorf("%w: no reply within %v", ErrServerAuth, timeout)
		}
		return nil, &BackendError{Op: "read", Err: err}
	}
	rest, err := r.OpenPrefix(prefix)
	if err != nil {
		return nil, ErrServerAuth
	}
	body := make([]byte, rest)
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, &BackendError{Op: "read", Err: err}
	}
	sh, err := r.OpenRest(body)
	if err != nil {
		return nil, ErrServerAuth
	}
	if !withinSkew(h.Now(), sh.Time, h.Skew) {
		return nil, fmt.Errorf("%w: server clock differs by more than %v", ErrServerAuth, h.Skew)
	}
	shared, err := eph.Shared(sh.Public)
	if err != nil {
		return nil, ErrServerAuth
	}
	agreed, err := wire.DefenceOf(sh.Ext)
	if err != nil || agreed > h.Defence {
		return nil, ErrServerAuth // a server never raises the client's request
	}
	pq, err := decapsulate(dk, sh)
	if err != nil {
		return nil, err
	}
	res, err := clientResumption(h.Resume, sh)
	if err != nil {
		return nil, err
	}
	k, err := sessionKeys(h.PSK, &hello, sh, shared, pq, Client, c, h.KeyLog)
	if k != nil {
		k.Defence, k.Resume = agreed, res
	}
	return k, err
}

// sessionKeys runs the key schedule of a finished handshake (inside wire)
// and returns the record state of the given side (its sealer is its
// sending direction). pq is the ML-KEM-768 shared secret of a hybrid
// handshake (nil: classic).
func sessionKeys(psk *wire.PSK, ch *wire.ClientHello, sh *wire.ServerHello, shared, pq []byte, side Role,
	c net.Conn, keyLog func(net.Conn, *wire.SessionKeys, wire.CipherID)) (*Keys, error) {
	var log func(*wire.SessionKeys)
	if keyLog != nil {
		log = func(k *wire.SessionKeys) { keyLog(c, k, ch.Cipher) }
	}
	seal, open, err := wire.DeriveRecords(psk, ch, sh, shared, pq, side == Client, log)
	if err != nil {
		return nil, err
	}
	return &Keys{Seal: seal, Open: open, Cipher: ch.Cipher}, nil
}

func withinSkew(now time.Time, ts uint64, skew time.Duration) bool {
	if skew == 0 {
		skew = DefaultSkew
	}
	d := now.Sub(time.Unix(int64(ts), 0))
	return d <= skew && d >= -skew
}

// ServerHandshake is the server's side: one per listener, shared by all
// connections. Every way a first flight can be wrong ends in Reject, the
// one reaction a prober can see.
type ServerHandshake struct {
	PSK *wire.PSK
	// Ciphers the server accepts; empty means both.
	Ciphers []wire.CipherID
	Rand    io.Reader
	Now     func() time.Time
	Skew    time.Duration
	// Salts remembers accepted salts (replay protection); it may be
	// shared with other servers.
	Salts SaltStore
	// DrainTimeout is this server's fixed, randomly chosen reaction to
	// invalid input: read and discard until this long after accept, then
	// close with FIN. No byte count or content ends the drain earlier.
	DrainTimeout time.Duration
	// Users, if set, makes this a multi-user server: PSK is then the
	// server's identity key, and each client's identity hint selects its
	// user key here (one key trial per handshake).
	Users *UserKeys
	// Prefix is what clients send before their first flight (empty: none);
	// a connection that does not start with it gets the invalid-input
	// reaction.
	Prefix []byte
	// DefenceCap is the strongest defence policy the server grants; a
	// client asking for more gets this (SPEC-v2.md §7a).
	DefenceCap wire.DefencePolicy
	Log        *logrus.Entry
	// KeyLog, if set, is told each session's data keys (plaintext
	// capture). It gets the connection Accept was given. nil normally.
	KeyLog func(c net.Conn, k *wire.SessionKeys, cipher wire.CipherID)
	// Resume, if set, makes the server resume sessions (SPEC-v2.md §7b):
	// see ResumeHook.
	Resume ResumeHook
}

// errReject carries why a handshake was refused (for the log, and cause
// for the server's counters).
type errReject struct {
	why   string
	cause error
}

func (e *errReject) Error() string { return "handshake rejected: " + e.why }

// ErrRejected is wrapped by every error from Accept: the connection got the
// invalid-input reaction.
var ErrRejected = errors.New("handshake rejected")

func (e *errReject) Unwrap() []error {
	if e.cause != nil {
		return []error{ErrRejected, e.cause}
	}
	return []error{ErrRejected}
}

// Accept runs the server side on a fresh connection accepted at accepted.
// On any failure it has already given the invalid-input reaction (Reject)
// and returns an error wrapping ErrRejected.
func (h *ServerHandshake) Accept(ctx context.Context, c net.Conn, accepted time.Time) (*Keys, error) {
	keys, err := h.Handshake(ctx, c, accepted)
	if errors.Is(err, ErrRejected) {
		h.Reject(ctx, c, accepted)
	}
	return keys, err
}

// Handshake is Accept without the reaction: on an error wrapping
// ErrRejected the caller must call Reject (a server does so outside its
// limit on handshakes in progress, so drained junk does not hold up
// legitimate clients).
func (h *ServerHandshake) Handshake(ctx context.Context, c net.Conn, accepted time.Time) (*Keys, error) {
	keys, err := h.accept(ctx, c, accepted)
	if err != nil {
		var rej *errReject
		if !errors.As(err, &rej) {
			// Our own failure (randomness, write): still no distinct
			// reaction for the peer.
			err = &errReject{"server error: " + err.Error(), nil}
		}
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return keys, nil
}

func (h *ServerHandshake) accept(ctx context.Context, c net.Conn, accepted time.Time) (_ *Keys, err error) {
	_ = c.SetReadDeadline(accepted.Add(h.DrainTimeout))
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if len(h.Prefix) > 0 {
		got := make([]byte, len(h.Prefix))
		if _, err := io.ReadFull(c, got); err != nil {
			return nil, &errReject{why: "short first flight"}
		}
		if subtle.ConstantTimeCompare(got, h.Prefix) != 1 {
			return nil, &errReject{why: "wrong prefix"}
		}
	}
	psk := h.PSK
	var uid wire.UserID // the zero id on a single-user server
	prefix := make([]byte, wire.ClientPrefixLen)
	if h.Users != nil {
		// Multi-user: salt and identity hint first; the hint names the one
		// key to try (wire/identity.go).
		head := make([]byte, wire.SaltSize+wire.IdentityHintSize)
		if _, err := io.ReadFull(c, head); err != nil {
			return nil, &errReject{why: "short first flight"}
		}
		salt := [wire.SaltSize]byte(head[:wire.SaltSize])
		uid = wire.OpenIdentityHint(h.PSK, &salt, (*[wire.IdentityHintSize]byte)(head[wire.SaltSize:]))
		user, ok := h.Users.Lookup(uid)
		if !ok {
			return nil, &errReject{why: "unknown user (or wrong server key)"}
		}
		psk = user
		copy(prefix, head[:wire.SaltSize])
		if _, err := io.ReadFull(c, prefix[wire.SaltSize:]); err != nil {
			return nil, &errReject{why: "short first flight"}
		}
	} else if _, err := io.ReadFull(c, prefix); err != nil {
		return nil, &errReject{why: "short first flight"}
	}
	r := wire.NewClientHelloReader(psk)
	rest, err := r.OpenPrefix(prefix)
	if err != nil {
		return nil, &errReject{why: "bad header (wrong key or not a usocks v2 client)"}
	}
	now := h.Now()
	ts := r.Time()
	if !withinSkew(now, ts, h.Skew) {
		return nil, &errReject{why: "timestamp outside the window"}
	}
	salt := r.Salt()
	if err := h.Salts.Insert(ctx, uid, &salt, ts, now); err != nil {
		return nil, &errReject{"salt store: " + err.Error(), err}
	}
	body := make([]byte, rest)
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, &errReject{why: "short first flight"}
	}
	ch, err := r.OpenRest(body)
	if err != nil {
		return nil, &errReject{why: "bad header (tampered)"}
	}
	if !h.cipherAllowed(ch.Cipher) {
		return nil, &errReject{why: "cipher not allowed: " + ch.Cipher.String()}
	}
	asked, err := wire.DefenceOf(ch.Ext)
	if err != nil {
		return nil, &errReject{why: "bad defence extension"}
	}
	agreed := min(asked, h.DefenceCap)
	eph, err := wire.NewEphemeral(h.Rand)
	if err != nil {
		return nil, err
	}
	sh := wire.ServerHello{Time: uint64(now.Unix()), ClientSalt: ch.Salt, Public: eph.Public()}
	if agreed != wire.DefenceOff {
		sh.Ext = wire.Extensions{wire.DefenceExt(agreed)}
	}
	pq, ct, err := encapsulate(ch)
	if err != nil {
		return nil, err
	}
	if ct != nil {
		sh.Ext = append(sh.Ext, wire.Extension{Type: wire.ExtKEM, Value: ct})
	}
	res, err := h.serverResumption(ctx, ch, uid)
	if err != nil {
		return nil, err
	}
	if res != nil {
		sh.Ext = append(sh.Ext, res.Reply.Exts()...)
		defer func() {
			if err != nil {
				h.Resume.Abort(res)
			}
		}()
	}
	if _, err := io.ReadFull(h.Rand, sh.Salt[:]); err != nil {
		return nil, err
	}
	if sh.PadLen, err = randInt(h.Rand, serverPadMax); err != nil {
		return nil, err
	}
	shared, err := eph.Shared(ch.Public)
	if err != nil {
		return nil, &errReject{why: "bad public key"}
	}
	_ = c.SetWriteDeadline(accepted.Add(h.DrainTimeout))
	if _, err := c.Write(wire.AppendServerHello(nil, psk, &sh)); err != nil {
		return nil, &BackendError{Op: "write", Err: err}
	}
	k, err := sessionKeys(psk, ch, &sh, shared, pq, Server, c, h.KeyLog)
	if k != nil {
		k.Defence, k.User, k.Resume = agreed, uid, res
	}
	return k, err
}

func (h *ServerHandshake) cipherAllowed(c wire.CipherID) bool {
	if c != wire.CipherChaCha20Poly1305 && c != wire.CipherAES256GCM {
		return false
	}
	if len(h.Ciphers) == 0 {
		return true
	}
	for _, a := range h.Ciphers {
		if a == c {
			return true
		}
	}
	return false
}

// Reject is the single reaction to invalid input: send nothing, read and
// discard until DrainTimeout after accept — however much arrives, in a
// small buffer — then close with FIN, the way LingerClose does. Cancelling
// ctx brings the deadline forward to now (a server under load ends its
// oldest drain early).
func (h *ServerHandshake) Reject(ctx context.Context, c net.Conn, accepted time.Time) {
	_ = c.SetReadDeadline(accepted.Add(h.DrainTimeout))
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	discard(c)
	stop()
	LingerClose(c, LingerTimeout)
}
