package runner

// Limits bound what authenticated peers can make a server hold: receive
// memory (per session, per user, in all) and sessions (per user, in all).
// They are keys of the `server:` section; 0 takes the default.
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
}

// Limit defaults.
const (
	DefaultSessionMemoryMiB = 64
	DefaultUserMemoryMiB    = 256
	DefaultTotalMemoryMiB   = 1024
)

// validate fills defaults and records problems.
func (l *Limits) validate(p *problems) {
	for _, k := range []struct {
		v    *int64
		name string
		def  int64
	}{
		{&l.SessionMemoryMiB, "session_memory_mib", DefaultSessionMemoryMiB},
		{&l.UserMemoryMiB, "user_memory_mib", DefaultUserMemoryMiB},
		{&l.TotalMemoryMiB, "total_memory_mib", DefaultTotalMemoryMiB},
	} {
		if *k.v == 0 {
			*k.v = k.def
		}
		if *k.v < 1 || *k.v > 1<<20 {
			p.bad(k.name, "must be 1..1048576 MiB")
		}
	}
}
