package runner

import (
	"fmt"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

// File descriptors. At start the soft RLIMIT_NOFILE is raised to the hard
// limit (limits_fd_unix.go). The server then counts the descriptors that
// sessions (their backend connection), streams (their target connection)
// and UDP associations (their socket) hold, and refuses a new one of them
// — the session gets a clean CLOSE, the stream an RST, the association a
// SOCKS5 failure — once the count would pass the limit less a reserve.
// The reserve keeps room for connections that are still authenticating
// (up to max_pending), the listeners, and the odd file, so accept never
// fails for want of a descriptor because of the sessions.

// fdSpare is the part of the reserve that is not max_pending: listeners,
// metrics, DNS, log and state files.
const fdSpare = 64

// fdGuard counts descriptors against a budget; limit 0 is no budget.
type fdGuard struct {
	limit  int64 // the soft RLIMIT_NOFILE (0: unknown or unlimited)
	budget int64 // what sessions, streams and UDP sockets may hold
	held   atomic.Int64
}

// newFDGuard is a guard for a process whose limit is limit, keeping
// pending (max_pending) and fdSpare descriptors aside; pending takes at
// most half of what is left.
func newFDGuard(limit int64, pending int) *fdGuard {
	g := &fdGuard{limit: limit}
	if limit > 0 {
		room := max(limit-fdSpare, 2)
		g.budget = max(room-min(int64(pending), room/2), 1)
	}
	return g
}

// take counts n more descriptors; false (nothing counted) past the budget.
func (g *fdGuard) take(n int64) bool {
	if g == nil {
		return true
	}
	if g.held.Add(n) > g.budget && g.limit > 0 {
		g.held.Add(-n)
		return false
	}
	return true
}

// put gives n descriptors back.
func (g *fdGuard) put(n int) {
	if g != nil {
		g.held.Add(-int64(n))
	}
}

func (g *fdGuard) err() error {
	return &limitError{"file descriptors (RLIMIT_NOFILE less a reserve)", int(g.budget)}
}

// checkFDs raises the process's descriptor limit and returns its soft
// value, with a warning when it is below need, what the limits named in
// why may take at once (0: unlimited or unknown).
func checkFDs(log *logrus.Entry, need int64, why logrus.Fields) int64 {
	soft, hard, err := raiseFileLimit()
	if err != nil {
		log.WithError(err).Warn("cannot read or raise the open file limit (RLIMIT_NOFILE)")
		return 0
	}
	f := logrus.Fields{"soft": soft, "hard": hard}
	if soft > 0 && need > soft {
		log.WithFields(f).WithFields(why).Warn(fmt.Sprintf("the open file limit is below what the limits allow (%d descriptors): "+
			"new sessions and streams are refused near it; raise it (ulimit -n, LimitNOFILE=) or lower the limits", need))
	} else {
		log.WithFields(f).Debug("open file limit")
	}
	return soft
}

// serverFDs is checkFDs for a server: max_pending connections and
// max_sessions sessions with a stream each must fit (a server whose
// sessions all hold max_streams streams needs far more; the guard refuses
// what does not fit).
func serverFDs(log *logrus.Entry, pending, sessions int) int64 {
	return checkFDs(log, int64(fdSpare+pending+2*sessions), logrus.Fields{"max_pending": pending, "max_sessions": sessions})
}

// clientFDs is checkFDs for a client: a session's max_streams app
// connections must fit.
func clientFDs(log *logrus.Entry, streams int) {
	checkFDs(log, int64(fdSpare+streams), logrus.Fields{"max_streams": streams})
}
