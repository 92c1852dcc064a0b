package runner

import (
	"context"
	"crypto/tls"
	"slices"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/wire"
)

// Live reload (SIGHUP; docs/operator-guide.md). A reload reads the config
// file again, checks it as start-up does, and puts it in force without
// dropping anything that runs:
//
//   - handshakes that start after it use the new keys (the single-user
//     key, the users of clients:, the server's identity key), cipher
//     restriction and defence cap; running sessions keep their keys;
//   - streams opened after it use the new frontend (access rules,
//     redirect target, proxy users, dial settings), on running sessions
//     too; running streams keep theirs;
//   - sessions that start after it use the new stream limits, timeouts,
//     keepalive, rekey and defence settings; the per-user, total and
//     pending limits change at once;
//   - the sessions of a user removed from clients: are ended gracefully
//     (CLOSE, as at shutdown): revoking a user takes effect now;
//   - log_level changes at once; a tls certificate is read again from
//     its files (renewed in place, or other files).
//
// Keys that only a restart can change (listen addresses, backend type and
// options, protocol, metrics, capture, replay store, the server's resume
// timeout and max_detached) keep their running values and are named in
// one warning. A config that does not parse or validate is refused as a
// whole, with every problem and its YAML path, and the running one stays.

// ReloadReport says what a reload did.
type ReloadReport struct {
	// Changed are the keys whose new values are in force, by YAML path.
	Changed []string
	// Restart are the changed keys that need a restart: they keep their
	// running values.
	Restart []string
	// Ended counts the sessions ended because their user was removed.
	Ended int
}

// ConfigLoader reads the config for a reload: the file, with what the
// command line overrides applied again.
type ConfigLoader func() (*Config, error)

// serverRestartKeys are the server keys a reload cannot change.
var serverRestartKeys = restartKeys(
	[]string{"protocol", "backend", "metrics", "metrics_allow_remote", "capture", "capture_plaintext", "capture_max_mib",
		"replay_window", "salt_cache", "replay_store", "replay_state", "salt_quota", "clients_from_store", "clients_refresh",
		"resume_timeout", "max_detached"},
	[]string{"backend.tls_cert", "backend.tls_key"})

// clientRestartKeys are the client keys a reload cannot change.
var clientRestartKeys = restartKeys(
	[]string{"protocol", "backend", "address", "port", "udp", "listen", "metrics", "metrics_allow_remote",
		"capture", "capture_plaintext", "capture_max_mib"}, nil)

// Reload reads the config again with load and puts it in force (see the
// top of this file). On error nothing changed.
func (s *Server) Reload(load ConfigLoader) (*ReloadReport, error) {
	return reloadOnce(&s.reloading, s.metrics, s.log, func() (*ReloadReport, error) { return s.reload(load) })
}

// reloadOnce runs one reload at a time, counts it and logs what it did.
func reloadOnce(mu *sync.Mutex, m *metrics, log *logrus.Entry, reload func() (*ReloadReport, error)) (*ReloadReport, error) {
	mu.Lock()
	defer mu.Unlock()
	rep, err := reload()
	m.reloaded(err == nil)
	if err != nil {
		log.WithField("error", oneLineErr(err)).Error("config reload refused; the running config stays")
		return nil, err
	}
	slices.Sort(rep.Changed)
	slices.Sort(rep.Restart)
	if len(rep.Restart) > 0 {
		log.WithField("keys", strings.Join(rep.Restart, ", ")).Warn("config reload: these keys need a restart and keep their running values")
	}
	f := logrus.Fields{"changed": strings.Join(rep.Changed, ", ")}
	if len(rep.Changed) == 0 {
		f["changed"] = "nothing"
	}
	if rep.Ended > 0 {
		f["sessions_ended"] = rep.Ended
	}
	log.WithFields(f).Info("config reloaded")
	return rep, nil
}

func (s *Server) reload(load ConfigLoader) (*ReloadReport, error) {
	c, err := load()
	if err != nil {
		return nil, err
	}
	n := c.Server
	if n == nil {
		return nil, &ConfigError{"server", "missing: the file has no server: section"}
	}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	old := s.cfg()
	rep := &ReloadReport{Restart: keepRestartOnly(old, n, "server", serverRestartKeys)}
	if multi := len(old.Clients) > 0 || old.ClientsFromStore; multi != (len(n.Clients) > 0 || n.ClientsFromStore) {
		// The key's meaning changes with it (identity key or the key).
		n.Clients, n.Key = old.Clients, old.Key
		rep.Restart = append(rep.Restart, "server.clients (single-user ↔ multi-user)")
	}
	if err := n.Validate(); err != nil { // what is in force with the kept keys
		return nil, err
	}
	rep.Changed = changedKeys(old, n, "server")
	// Everything that can fail comes first; then nothing can.
	var hs *stages.ServerHandshake
	if cur := s.hs.Load(); cur != nil {
		h := *cur
		if h.PSK, err = n.PSK("server"); err != nil {
			return nil, err
		}
		h.Ciphers = nil
		if n.Cipher != "" && n.Cipher != "auto" {
			ci, _ := wire.ParseCipher(n.Cipher)
			h.Ciphers = []wire.CipherID{ci}
		}
		h.DefenceCap = n.defencePolicy()
		if n.ProbeTimeout > 0 {
			h.DrainTimeout = n.ProbeTimeout
		}
		hs = &h
	}
	var applyUsers func() map[wire.UserID]string
	if s.replay != nil && s.replay.users != nil {
		if applyUsers, err = s.replay.reloadUsers(n.Clients); err != nil {
			return nil, err
		}
	}
	var fe stages.Frontend
	if changedUnder(rep.Changed, "server.frontend") {
		if fe, err = newFrontend(n, s.log); err != nil {
			return nil, err
		}
	}
	var cert *tls.Certificate
	if s.cert != nil {
		if cert, err = loadCert(&n.Backend); err != nil {
			return nil, err
		}
	}
	s.live.Store(n)
	if hs != nil {
		if hs.PSK != nil && old.Key != n.Key {
			warnDamagedKey(s.log, "server.key", n.Key)
		}
		s.hs.Store(hs)
	}
	if applyUsers != nil {
		names := applyUsers()
		s.names.Store(&names)
		rep.Ended = s.sessions.endRemoved(s.replay.users)
	}
	if fe != nil {
		s.fe.Set(fe)
	}
	if cert != nil {
		s.cert.p.Store(cert)
	}
	s.limits.set(n.Limits)
	s.waiting.setMax(n.MaxPending)
	setLogLevel(s.log.Logger, n.LogLevel, s.baseLevel)
	return rep, nil
}

// Reload reads the config again with load and puts it in force: sessions
// and app connections that start after it use the new keys and settings;
// running ones keep theirs. On error nothing changed.
func (c *Client) Reload(load ConfigLoader) (*ReloadReport, error) {
	return reloadOnce(&c.reloading, c.metrics, c.log, func() (*ReloadReport, error) { return c.reload(load) })
}

func (c *Client) reload(load ConfigLoader) (*ReloadReport, error) {
	cf, err := load()
	if err != nil {
		return nil, err
	}
	n := cf.Client
	if n == nil {
		return nil, &ConfigError{"client", "missing: the file has no client: section"}
	}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	old := c.cfg()
	rep := &ReloadReport{Restart: keepRestartOnly(old, n, "client", clientRestartKeys)}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	rep.Changed = changedKeys(old, n, "client")
	l, err := newClientLive(n)
	if err != nil {
		return nil, err
	}
	if l.psk != nil && old.Key != n.Key {
		warnDamagedKey(c.log, "client.key", n.Key)
	}
	c.live.Store(l)
	setLogLevel(c.log.Logger, n.LogLevel, c.baseLevel)
	return rep, nil
}

// oneLineErr joins a list of config problems into one log field.
func oneLineErr(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// changedUnder says whether a key under key is among changed.
func changedUnder(changed []string, key string) bool {
	for _, c := range changed {
		if under(c, key) {
			return true
		}
	}
	return false
}

// setLogLevel applies log_level, or goes back to base when it is unset.
func setLogLevel(l *logrus.Logger, level string, base logrus.Level) {
	lv := base
	if level != "" {
		var err error
		if lv, err = logrus.ParseLevel(level); err != nil {
			return // validated before
		}
	}
	l.SetLevel(lv)
}

// userSessions are the running sessions of a multi-user server by user,
// so that removing a user ends theirs.
type userSessions struct {
	mu sync.Mutex
	m  map[wire.UserID]map[*context.CancelFunc]struct{}
}

func newUserSessions() *userSessions {
	return &userSessions{m: make(map[wire.UserID]map[*context.CancelFunc]struct{})}
}

// track registers a session of user id (users: the server's users, nil on
// a single-user server) and returns its context, which endRemoved cancels,
// and the function to call when the session has ended.
func (u *userSessions) track(ctx context.Context, id wire.UserID, users *stages.UserKeys) (context.Context, func()) {
	if users == nil {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	h := &cancel
	u.mu.Lock()
	if u.m[id] == nil {
		u.m[id] = make(map[*context.CancelFunc]struct{})
	}
	u.m[id][h] = struct{}{}
	u.mu.Unlock()
	if _, ok := users.Lookup(id); !ok {
		cancel() // removed by a reload since its handshake
	}
	return ctx, func() {
		u.mu.Lock()
		delete(u.m[id], h)
		if len(u.m[id]) == 0 {
			delete(u.m, id)
		}
		u.mu.Unlock()
		cancel()
	}
}

// endRemoved ends (gracefully) every session whose user is not in users
// any more and returns how many.
func (u *userSessions) endRemoved(users *stages.UserKeys) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for id, set := range u.m {
		if _, ok := users.Lookup(id); ok {
			continue
		}
		for cancel := range set {
			(*cancel)()
			n++
		}
	}
	return n
}

// setMax changes max_pending; a lower cap ends the oldest waiting
// connections when the next one comes.
func (w *waiting) setMax(n int) {
	w.mu.Lock()
	w.max = n
	w.mu.Unlock()
}
