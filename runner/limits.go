package runner

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"usocks/stages"
	"usocks/stages/frontend"
	"usocks/wire"
)

// limiter applies a server's Limits, in one place: each session's
// receive-memory budget sits under its user's, which sits under the
// server's; sessions are counted per user and in all; each session gets a
// Gate for its dials and UDP sockets; and the file descriptors that
// sessions, streams and UDP sockets hold are counted against the
// process's limit (limits_fd.go).
//
// set replaces the limits (a reload): session counts apply at once to new
// sessions; a session's dial and UDP bounds and its memory budgets are
// taken when it starts.
type limiter struct {
	cfg   atomic.Pointer[Limits]
	multi bool // a multi-user server: sessions are also counted per user
	total *stages.MemBudget
	fds   *fdGuard

	mu       sync.Mutex
	users    map[wire.UserID]*stages.MemBudget
	sessions int
	perUser  map[wire.UserID]int

	// Refused counts what each limit refused.
	Refused struct{ Sessions, Dials, UDP, FDs Counter }
}

const mib = 1 << 20

func newLimiter(l Limits, multiUser bool, fds *fdGuard) *limiter {
	lm := &limiter{multi: multiUser, total: stages.NewMemBudget(l.TotalMemoryMiB*mib, nil), fds: fds,
		users: make(map[wire.UserID]*stages.MemBudget), perUser: make(map[wire.UserID]int)}
	lm.set(l)
	return lm
}

// set makes l the limits for what starts from now on; the user and total
// memory budgets change at once.
func (l *limiter) set(c Limits) {
	l.cfg.Store(&c)
	l.total.SetLimit(c.TotalMemoryMiB * mib)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, u := range l.users {
		u.SetLimit(c.UserMemoryMiB * mib)
	}
}

// limitError is a refusal by one limit: it names the config key.
type limitError struct {
	key   string
	limit int
}

func (e *limitError) Error() string { return fmt.Sprintf("%s (%d) reached", e.key, e.limit) }
func (e *limitError) Unwrap() error { return frontend.ErrLimit }

// open admits a new session of user (the zero id for v1 and single-user
// servers), or returns the limit that refuses it. The session's end must
// call close.
func (l *limiter) open(user wire.UserID, log *logrus.Entry) (*sessionLimits, error) {
	cfg := l.cfg.Load()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.sessions >= cfg.MaxSessions:
		l.Refused.Sessions.Add()
		return nil, &limitError{"max_sessions", cfg.MaxSessions}
	case l.multi && l.perUser[user] >= cfg.MaxSessionsPerUser:
		l.Refused.Sessions.Add()
		return nil, &limitError{"max_sessions_per_user", cfg.MaxSessionsPerUser}
	case !l.fds.take(1):
		l.Refused.FDs.Add()
		return nil, l.fds.err()
	}
	l.sessions++
	l.perUser[user]++
	u := l.users[user]
	if u == nil {
		// One entry per configured client key at most: the handshake
		// admits only those.
		u = stages.NewMemBudget(cfg.UserMemoryMiB*mib, l.total)
		l.users[user] = u
	}
	return &sessionLimits{l: l, user: user, log: log,
		mem:   stages.NewMemBudget(cfg.SessionMemoryMiB*mib, u),
		dials: make(chan struct{}, cfg.SessionMaxDials),
		rate:  rate.NewLimiter(rate.Limit(cfg.SessionDialRate), cfg.SessionDialRate),
		udp:   cfg.SessionMaxUDP, fds: make(map[uint16]bool)}, nil
}

// count is the number of sessions open.
func (l *limiter) count() int64 { l.mu.Lock(); defer l.mu.Unlock(); return int64(l.sessions) }

// sessionLimits is one session's share: its memory budget, its Gate for
// dials and UDP sockets, and the file descriptors its streams hold.
type sessionLimits struct {
	l    *limiter
	user wire.UserID
	log  *logrus.Entry
	mem  *stages.MemBudget

	dials chan struct{} // dial slots
	rate  *rate.Limiter

	mu     sync.Mutex
	udp    int             // UDP sockets this session may still open
	fds    map[uint16]bool // streams holding a counted descriptor
	closed bool
	warned [3]bool // a refusal of each kind is logged once at Warn level
}

// Refusal kinds, for sessionLimits.warned.
const (
	refusedDial = iota
	refusedUDP
	refusedFD
)

// close gives the session's descriptors back; it may be called more than once.
func (s *sessionLimits) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	n := 1 + len(s.fds) // the backend connection, and streams not ended
	s.fds = nil
	s.mu.Unlock()
	s.l.fds.put(n)
	s.l.mu.Lock()
	s.l.sessions--
	if s.l.perUser[s.user]--; s.l.perUser[s.user] == 0 {
		delete(s.l.perUser, s.user)
	}
	s.l.mu.Unlock()
}

// refuse counts and logs a refusal (at Warn the first time in this
// session, then at Debug: a client that keeps trying does not flood the
// log) and returns err.
func (s *sessionLimits) refuse(kind int, c *Counter, err error) error {
	c.Add()
	s.mu.Lock()
	first := !s.warned[kind]
	s.warned[kind] = true
	s.mu.Unlock()
	e := s.log.WithError(err)
	if first {
		e.Warn("stream refused by a limit")
	} else {
		e.Debug("stream refused by a limit")
	}
	return err
}

// Dial implements frontend.Gate: a slot of session_max_dials, then
// session_dial_rate, both within ctx (the dial's deadline).
func (s *sessionLimits) Dial(ctx context.Context) (func(), error) {
	select {
	case s.dials <- struct{}{}:
	case <-ctx.Done():
		return nil, s.refuse(refusedDial, &s.l.Refused.Dials, fmt.Errorf("%w: %w", &limitError{"session_max_dials", cap(s.dials)}, ctx.Err()))
	}
	if err := s.rate.Wait(ctx); err != nil {
		<-s.dials
		return nil, s.refuse(refusedDial, &s.l.Refused.Dials, fmt.Errorf("%w: %w", &limitError{"session_dial_rate", int(s.rate.Limit())}, err))
	}
	return func() { <-s.dials }, nil
}

// Socket implements frontend.Gate: session_max_udp, and a descriptor.
func (s *sessionLimits) Socket() (func(), error) {
	s.mu.Lock()
	if s.udp <= 0 {
		s.mu.Unlock()
		return nil, s.refuse(refusedUDP, &s.l.Refused.UDP, &limitError{"session_max_udp", s.l.cfg.Load().SessionMaxUDP})
	}
	s.udp--
	s.mu.Unlock()
	if !s.l.fds.take(1) {
		s.mu.Lock()
		s.udp++
		s.mu.Unlock()
		return nil, s.refuse(refusedFD, &s.l.Refused.FDs, s.l.fds.err())
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.l.fds.put(1)
			s.mu.Lock()
			s.udp++
			s.mu.Unlock()
		})
	}, nil
}

// stream counts the descriptor of a new stream's target connection
// (false: the process is near its limit, refuse the stream).
func (s *sessionLimits) stream(id uint16) error {
	if !s.l.fds.take(1) {
		return s.refuse(refusedFD, &s.l.Refused.FDs, s.l.fds.err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.l.fds.put(1)
		return net.ErrClosed
	}
	s.fds[id] = true
	return nil
}

// ended gives back the descriptor of a stream that has ended (the demux
// reports each stream's end once, after its Open returned, and before a
// new stream may take its id).
func (s *sessionLimits) ended(id uint16) {
	s.mu.Lock()
	held := s.fds[id]
	delete(s.fds, id)
	s.mu.Unlock()
	if held {
		s.l.fds.put(1)
	}
}

// frontend wraps the server's frontend for this session: each stream
// counts a descriptor, and Open runs with this session's Gate.
func (s *sessionLimits) frontend(fe stages.Frontend) stages.Frontend {
	if src, ok := fe.(stages.FrontendSource); ok {
		// A reload may replace it: wrap the one current at each SYN.
		return &liveLimitedFrontend{src: src, s: s}
	}
	lf := &limitedFrontend{fe: fe, s: s}
	if tf, ok := fe.(stages.TargetFrontend); ok {
		return &limitedTargetFrontend{lf, tf}
	}
	return lf
}

type limitedFrontend struct {
	fe stages.Frontend
	s  *sessionLimits
}

func (f *limitedFrontend) Open(ctx context.Context, st stages.StreamIO) (net.Conn, error) {
	if err := f.s.stream(st.ID()); err != nil {
		return nil, err
	}
	return f.fe.Open(frontend.WithGate(ctx, f.s), st)
}

type limitedTargetFrontend struct {
	*limitedFrontend
	tf stages.TargetFrontend
}

func (f *limitedTargetFrontend) OpenTarget(ctx context.Context, st stages.StreamIO, t wire.Target) (net.Conn, error) {
	if err := f.s.stream(st.ID()); err != nil {
		return nil, err
	}
	return f.tf.OpenTarget(frontend.WithGate(ctx, f.s), st, t)
}

// liveLimitedFrontend wraps, for each new stream, the frontend current at
// its SYN (stages.FrontendSource).
type liveLimitedFrontend struct {
	src stages.FrontendSource
	s   *sessionLimits
}

func (f *liveLimitedFrontend) Current() stages.Frontend { return f.s.frontend(f.src.Current()) }

func (f *liveLimitedFrontend) Open(ctx context.Context, st stages.StreamIO) (net.Conn, error) {
	return f.Current().Open(ctx, st)
}
