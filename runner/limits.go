package runner

import (
	"sync"

	"usocks/stages"
	"usocks/wire"
)

// limiter applies a server's Limits: each session's receive-memory budget
// sits under its user's, which sits under the server's.
type limiter struct {
	cfg   Limits
	total *stages.MemBudget
	mu    sync.Mutex
	users map[wire.UserID]*stages.MemBudget
}

const mib = 1 << 20

func newLimiter(l Limits) *limiter {
	return &limiter{cfg: l, total: stages.NewMemBudget(l.TotalMemoryMiB*mib, nil),
		users: make(map[wire.UserID]*stages.MemBudget)}
}

// sessionMemory is a new session's budget (user: the zero id for v1 and
// single-user servers).
func (l *limiter) sessionMemory(user wire.UserID) *stages.MemBudget {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.users[user]
	if u == nil {
		// One entry per configured client key at most: the handshake
		// admits only those.
		u = stages.NewMemBudget(l.cfg.UserMemoryMiB*mib, l.total)
		l.users[user] = u
	}
	return stages.NewMemBudget(l.cfg.SessionMemoryMiB*mib, u)
}
