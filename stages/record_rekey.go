package stages

import (
	"crypto/cipher"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"usocks/wire"
)

// In-band rekeying (SPEC-v2.md §4a). Each record stage owns its direction's
// key material: the encrypt stage decides when to rekey and seals a
// KEYUPDATE frame under the old key before switching; the decrypt stage
// switches when it opens one. Keys are replaced, never kept.

// Rekeying defaults: well below the 2^24-record limit of a key, and at
// least hourly (as WireGuard does).
const (
	DefaultRekeyAfter = 1 << 22 // records
	defaultRekeyEvery = time.Hour
)

// Rekeyer is one direction's key material.
type Rekeyer struct {
	Cipher wire.CipherID
	Key    [wire.KeySize]byte
	// After and Every say when the sender rekeys: after this many records,
	// or this long, under one key (zero: the defaults).
	After uint64
	Every time.Duration
	// Rand draws salts (sender only).
	Rand io.Reader
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Counter, if set, counts rekeys done.
	Counter *atomic.Int64

	since time.Time
}

func (r *Rekeyer) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// due reports whether a sender that has sealed boxes AEAD boxes under the
// current key should rekey now.
func (r *Rekeyer) due(boxes uint64) bool {
	after, every := r.After, r.Every
	if after == 0 {
		after = DefaultRekeyAfter
	}
	if every == 0 {
		every = defaultRekeyEvery
	}
	if r.since.IsZero() {
		r.since = r.now()
	}
	return boxes/2 >= after || r.now().Sub(r.since) >= every
}

// next moves to the key after salt and returns its AEAD; the old key is
// overwritten (forgotten). On failure nothing changes.
func (r *Rekeyer) next(salt []byte) (cipher.AEAD, error) {
	k := wire.RekeyKey(&r.Key, salt)
	a, err := wire.NewAEAD(r.Cipher, &k)
	if err != nil {
		clear(k[:])
		return nil, err
	}
	r.Key = k
	clear(k[:])
	r.since = r.now()
	if r.Counter != nil {
		r.Counter.Add(1)
	}
	return a, nil
}

// NextOpener moves to the key after salt and returns its opener: the
// receiving side of a KEYUPDATE (wire.RecordReader.Rekey).
func (r *Rekeyer) NextOpener(salt []byte) (*wire.Opener, error) {
	a, err := r.next(salt)
	if err != nil {
		return nil, err
	}
	return wire.NewOpener(a), nil
}

// rekey seals a KEYUPDATE under s into buf and returns the sealer of the
// next key. The next key is made before the KEYUPDATE is sealed, so a
// failure leaves buf and the key as they were; the caller ends the session
// on any error (a sender that cannot rekey must not go on under a worn key).
func (r *Rekeyer) rekey(buf []byte, s *wire.Sealer) ([]byte, *wire.Sealer, error) {
	salt := make([]byte, wire.SaltSize)
	if _, err := io.ReadFull(r.Rand, salt); err != nil {
		return buf, s, fmt.Errorf("rekey: %w", err)
	}
	old := r.Key
	defer clear(old[:])
	a, err := r.next(salt)
	if err != nil {
		return buf, s, fmt.Errorf("rekey: %w", err)
	}
	out, err := s.SealFrame(buf, &wire.Frame{Type: wire.FrameKeyUpdate, Payload: salt}, 0)
	if err != nil {
		r.Key = old // the peer was not told: stay on the old key
		return buf, s, fmt.Errorf("rekey: %w", err)
	}
	return out, wire.NewSealer(a), nil
}

// Forget zeroes the key material (at the end of a session).
func (r *Rekeyer) Forget() { clear(r.Key[:]) }
