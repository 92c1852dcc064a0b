package stages

import (
	"sync/atomic"

	"usocks/wire"
)

// UserKeys is a multi-user server's set of user keys, by user id. It can
// be replaced while the server runs (users added or revoked): a handshake
// looks its user up once, so running sessions keep the key they started
// with and only new handshakes see the change.
type UserKeys struct {
	p atomic.Pointer[map[wire.UserID]*wire.PSK]
}

// NewUserKeys returns a set holding m (which it owns from then on).
func NewUserKeys(m map[wire.UserID]*wire.PSK) *UserKeys {
	u := new(UserKeys)
	u.Set(m)
	return u
}

// Set replaces the whole set; the caller must not change m afterwards.
func (u *UserKeys) Set(m map[wire.UserID]*wire.PSK) { u.p.Store(&m) }

// Lookup returns the key of user id.
func (u *UserKeys) Lookup(id wire.UserID) (*wire.PSK, bool) {
	m := u.p.Load()
	if m == nil {
		return nil, false
	}
	k, ok := (*m)[id]
	return k, ok
}

// Len is the number of users.
func (u *UserKeys) Len() int {
	if m := u.p.Load(); m != nil {
		return len(*m)
	}
	return 0
}
