package stages

import (
	"context"
	"errors"
	"sync"
	"time"

	"usocks/wire"
)

// Replay protection (SPEC-v2.md §3, "Replay"): a server remembers the salt
// of every first flight it accepted while that flight's timestamp could
// still be accepted, and refuses a flight whose salt it holds.

// SaltStore remembers accepted client salts. One store may serve several
// servers (a shared store): a flight accepted by any of them is refused by
// all.
type SaltStore interface {
	// Insert records salt, sent by user in a flight stamped ts (Unix
	// seconds), checked against the server's clock reading now. It returns
	// nil if the salt is new and was recorded atomically with the check;
	// otherwise an error wrapping ErrReplay, ErrSaltQuota, ErrStale or
	// ErrStoreDown. Single-user servers pass the zero user.
	Insert(ctx context.Context, user wire.UserID, salt *[wire.SaltSize]byte, ts uint64, now time.Time) error
}

// Reasons a SaltStore refuses a salt.
var (
	ErrReplay    = errors.New("replayed salt")
	ErrSaltQuota = errors.New("salt quota exhausted (user or store full)")
	ErrStale     = errors.New("timestamp older than the replay store can vouch for")
	ErrStoreDown = errors.New("replay store unavailable")
)

// LocalSaltStore is the in-process salt store. Salts are kept in buckets by
// their flight's timestamp (Width seconds each), so expiry drops a whole
// bucket at once and every Insert costs a few map operations whatever the
// number of salts held: no scan, and the lock is held for constant time.
//
// Its floor is the lowest timestamp it accepts. It only rises: to now -
// skew as the clock advances (buckets below it are dropped), so a wall
// clock stepping backwards cannot make a dropped salt acceptable again;
// and, at start, to what a previous run's saved state requires
// (record_saltstate.go).
type LocalSaltStore struct {
	width int64 // seconds of timestamps per bucket
	skew  int64 // accepted clock difference, whole seconds rounded up
	max   int   // salts held at most
	quota int   // salts held per user at most

	mu      sync.Mutex
	floor   int64
	buckets map[int64]*saltBucket // by ts / width
	n       int
	// failAfter, if set, is when (on the monotonic clock) the store stops
	// accepting because its state was not saved in time (record_saltstate.go).
	failAfter time.Time
}

type saltBucket struct {
	salts map[[wire.SaltSize]byte]wire.UserID
	users map[wire.UserID]int
}

// NewLocalSaltStore returns an empty store for a server that accepts
// timestamps within skew of its clock, holding at most max salts and at
// most quota per user (0: no per-user limit). It accepts no timestamp
// before start's second: without saved state it cannot know what an
// earlier run accepted. (Flights stamped in that second, or later by a
// client whose clock runs ahead, may have been accepted before a restart;
// refusing them would refuse every client for a while after each start,
// so only a saved state closes that gap: RestoreState.)
func NewLocalSaltStore(skew time.Duration, max, quota int, start time.Time) *LocalSaltStore {
	s := &LocalSaltStore{max: max, quota: quota, buckets: make(map[int64]*saltBucket)}
	s.skew = int64((skew + time.Second - 1) / time.Second)
	s.width = max64(1, s.skew/4)
	s.floor = start.Unix()
	return s
}

func ceilUnix(t time.Time) int64 {
	if t.Nanosecond() > 0 {
		return t.Unix() + 1
	}
	return t.Unix()
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// Insert implements SaltStore.
func (s *LocalSaltStore) Insert(_ context.Context, user wire.UserID, salt *[wire.SaltSize]byte, ts uint64, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.failAfter.IsZero() && time.Now().After(s.failAfter) {
		return ErrStoreDown
	}
	s.advance(now.Unix() - s.skew)
	t := int64(ts)
	if ts > 1<<62 || t < s.floor {
		return ErrStale
	}
	held := 0
	for _, b := range s.buckets { // a handful: 2·skew/width + 2
		if _, ok := b.salts[*salt]; ok {
			return ErrReplay
		}
		held += b.users[user]
	}
	if s.n >= s.max || (s.quota > 0 && held >= s.quota) {
		return ErrSaltQuota
	}
	s.bucket(t/s.width).add(user, salt)
	s.n++
	return nil
}

func (s *LocalSaltStore) bucket(i int64) *saltBucket {
	b := s.buckets[i]
	if b == nil {
		b = &saltBucket{salts: make(map[[wire.SaltSize]byte]wire.UserID), users: make(map[wire.UserID]int)}
		s.buckets[i] = b
	}
	return b
}

func (b *saltBucket) add(user wire.UserID, salt *[wire.SaltSize]byte) {
	b.salts[*salt] = user
	b.users[user]++
}

// advance raises the floor to f (never lowers it) and drops every bucket
// whose timestamps are all below it.
func (s *LocalSaltStore) advance(f int64) {
	if f <= s.floor {
		return
	}
	s.floor = f
	for i, b := range s.buckets {
		if (i+1)*s.width <= f {
			s.n -= len(b.salts)
			delete(s.buckets, i)
		}
	}
}

// Len is the number of salts held.
func (s *LocalSaltStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Floor is the lowest timestamp the store accepts now.
func (s *LocalSaltStore) Floor() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.floor
}
