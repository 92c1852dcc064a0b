package runner

// Limits bound what authenticated peers can make a server hold: receive
// memory (per session, per user, in all), sessions (per user, in all),
// target dials and UDP sockets per session. They are keys of the
// `server:` section; 0 takes the default. File descriptors are bounded by
// the process's limit (runner/limits_fd.go), not by a key.
type Limits struct {
	// SessionMemoryMiB bounds the data one session's streams keep
	// buffered for their sockets (default 64 MiB). A stream that would
	// pass it, or one of the two below, is reset.
	SessionMemoryMiB int64 `yaml:"session_memory_mib"`
	// UserMemoryMiB bounds the same over all sessions of one client key
	// (default 256 MiB).
	UserMemoryMiB int64 `yaml:"user_memory_mib"`
	// TotalMemoryMiB bounds the same over the whole server (default
	// 1024 MiB).
	TotalMemoryMiB int64 `yaml:"total_memory_mib"`
	// MaxSessions bounds the sessions of the whole server (default 1024).
	// A session past it is closed right after its handshake (a clean
	// CLOSE: the client backs off and tries again).
	MaxSessions int `yaml:"max_sessions"`
	// MaxSessionsPerUser bounds the sessions of one client key on a
	// multi-user server (`clients:`; default 64). On a single-key server
	// every client is the one user and only max_sessions applies.
	MaxSessionsPerUser int `yaml:"max_sessions_per_user"`
	// SessionMaxDials bounds the target dials one session has in progress
	// at once (default 32); more wait for a slot within
	// frontend.dial_timeout, then their stream is reset.
	SessionMaxDials int `yaml:"session_max_dials"`
	// SessionDialRate bounds the target dials one session starts per
	// second, with bursts of as many (default 1000: a busy browser opens a few hundred connections a second at most); a dial that would
	// have to wait past frontend.dial_timeout is refused (stream reset).
	SessionDialRate int `yaml:"session_dial_rate"`
	// SessionMaxUDP bounds the UDP associations (one server socket each)
	// of one session (default 64; socks5 frontend). More are refused with
	// a SOCKS5 failure reply.
	SessionMaxUDP int `yaml:"session_max_udp"`
	// MaxDetached bounds the sessions kept without a backend, waiting for
	// their clients to resume them (default 1024). A session that loses
	// its backend beyond it ends at once (its streams are reset).
	MaxDetached int `yaml:"max_detached"`
}

// Limit defaults.
const (
	DefaultSessionMemoryMiB   = 64
	DefaultUserMemoryMiB      = 256
	DefaultTotalMemoryMiB     = 1024
	DefaultMaxSessions        = 1024
	DefaultMaxSessionsPerUser = 64
	DefaultSessionMaxDials    = 32
	DefaultSessionDialRate    = 1000
	DefaultSessionMaxUDP      = 64
)

// validate fills defaults and records problems.
func (l *Limits) validate(p *problems) {
	for _, k := range []struct {
		v        *int64
		name     string
		def, max int64
		unit     string
	}{
		{&l.SessionMemoryMiB, "session_memory_mib", DefaultSessionMemoryMiB, 1 << 20, " MiB"},
		{&l.UserMemoryMiB, "user_memory_mib", DefaultUserMemoryMiB, 1 << 20, " MiB"},
		{&l.TotalMemoryMiB, "total_memory_mib", DefaultTotalMemoryMiB, 1 << 20, " MiB"},
	} {
		if *k.v == 0 {
			*k.v = k.def
		}
		if *k.v < 1 || *k.v > k.max {
			p.bad(k.name, "must be 1..%d%s", k.max, k.unit)
		}
	}
	for _, k := range []struct {
		v        *int
		name     string
		def, max int
	}{
		{&l.MaxSessions, "max_sessions", DefaultMaxSessions, 1 << 20},
		{&l.MaxSessionsPerUser, "max_sessions_per_user", DefaultMaxSessionsPerUser, 1 << 20},
		{&l.SessionMaxDials, "session_max_dials", DefaultSessionMaxDials, 65535},
		{&l.SessionDialRate, "session_dial_rate", DefaultSessionDialRate, 1 << 20},
		{&l.SessionMaxUDP, "session_max_udp", DefaultSessionMaxUDP, 65535},
		{&l.MaxDetached, "max_detached", DefaultMaxDetached, 1 << 20},
	} {
		if *k.v == 0 {
			*k.v = k.def
		}
		if *k.v < 1 || *k.v > k.max {
			p.bad(k.name, "%d: must be 1..%d", *k.v, k.max)
		}
	}
}
