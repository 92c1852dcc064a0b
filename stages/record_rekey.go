package stages

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"usocks/wire"
)

// In-band rekeying (SPEC-v2.md §4a). The keys never leave wire: the
// encrypt stage decides when to rekey and asks its Sealer to seal a
// KEYUPDATE under the old key and move to the next one
// (wire.Sealer.SealKeyUpdate); the decrypt stage's Opener follows the
// peer's KEYUPDATE frames by itself (wire.Opener.Rekey, called by the
// record reader). Old keys are overwritten inside wire, and each stage
// makes its Sealer or Opener forget its key when it ends.

// Rekeying defaults: well below the 2^24-record limit of a key, and at
// least hourly (as WireGuard does).
const (
	DefaultRekeyAfter = 1 << 22 // records
	defaultRekeyEvery = time.Hour
)

// Rekeyer is the sender's rekeying policy: when to rekey, and where the
// salts come from. It holds no key.
type Rekeyer struct {
	// After and Every say when the sender rekeys: after this many records,
	// or this long, under one key (zero: the defaults).
	After uint64
	Every time.Duration
	// Rand draws salts.
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

// rekey draws a salt and has s seal a KEYUPDATE into buf and move to the
// next key. On any error buf and the key are as they were, and the
// caller ends the session (a sender that cannot rekey must not go on
// under a worn key).
func (r *Rekeyer) rekey(buf []byte, s *wire.Sealer) ([]byte, error) {
	salt := make([]byte, wire.SaltSize)
	if _, err := io.ReadFull(r.Rand, salt); err != nil {
		return buf, fmt.Errorf("rekey: %w", err)
	}
	out, err := s.SealKeyUpdate(buf, salt)
	if err != nil {
		return out, fmt.Errorf("rekey: %w", err)
	}
	r.since = r.now()
	if r.Counter != nil {
		r.Counter.Add(1)
	}
	return out, nil
}
