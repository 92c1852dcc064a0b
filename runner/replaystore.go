package runner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"usocks/redisstore"
	"usocks/stages"
	"usocks/wire"
)

// Replay protection and users shared between replicas (docs/scale-out.md).

// ScaleOutConfig is the server's replay-store and shared-user settings.
type ScaleOutConfig struct {
	// ReplayStore is where salts are remembered: empty for this process
	// (the default), or redis://[user:password@]HOST:PORT/DB for one store
	// shared by every replica behind the same address. When it cannot be
	// reached, new handshakes are refused; running sessions go on.
	ReplayStore string `yaml:"replay_store"`
	// ReplayState (local store only) is a file where the salts are saved
	// every few seconds and at stop, so that a restart does not reopen
	// the replay window. Without it, flights stamped before the start are
	// refused, which does not cover clients whose clock runs ahead.
	ReplayState string `yaml:"replay_state"`
	// SaltQuota caps the salts one user may have remembered (multi-user
	// servers; default salt_cache / 8).
	SaltQuota int `yaml:"salt_quota"`
	// ClientsFromStore also loads `clients` from the replay store's hash
	// <prefix>clients (name → key), re-read every ClientsRefresh (default
	// 2s): users added there are accepted and removed ones refused by
	// every replica, without a restart; running sessions stay.
	ClientsFromStore bool          `yaml:"clients_from_store"`
	ClientsRefresh   time.Duration `yaml:"clients_refresh"`
}

// ReplayStatePeriod is how often the local store's state file is saved; a
// store whose state could not be saved for two periods refuses new salts.
const ReplayStatePeriod = 5 * time.Second

func (s *ServerConfig) validateScaleOut(p *problems) {
	so := &s.ScaleOutConfig
	if len(s.Backend.Servers) > 0 {
		p.bad("backend.servers", "only for the client (a server listens on backend.address and backend.port)")
	}
	if so.ReplayStore != "" {
		if !strings.HasPrefix(so.ReplayStore, "redis://") && !strings.HasPrefix(so.ReplayStore, "rediss://") {
			p.bad("replay_store", "want redis://HOST:PORT/DB (or rediss:// for TLS)")
		} else if _, err := redis.ParseURL(so.ReplayStore); err != nil {
			p.bad("replay_store", "%s", err)
		}
		if so.ReplayState != "" {
			p.bad("replay_state", "only for the local store (the shared store keeps the salts)")
		}
	}
	if so.ClientsFromStore && so.ReplayStore == "" {
		p.bad("clients_from_store", "needs replay_store")
	}
	if so.ClientsFromStore && s.Protocol != "v2" {
		p.bad("clients_from_store", "only for protocol v2")
	}
	if so.ClientsRefresh == 0 {
		so.ClientsRefresh = 2 * time.Second
	}
	if so.ClientsRefresh < 10*time.Millisecond || so.ClientsRefresh > time.Hour {
		p.bad("clients_refresh", "must be 10ms..1h")
	}
	if so.SaltQuota == 0 && (len(s.Clients) > 0 || so.ClientsFromStore) {
		so.SaltQuota = max(s.SaltCache/8, 1000)
	}
	if so.SaltQuota < 0 {
		p.bad("salt_quota", "must not be negative")
	}
}

// replay is a server's salt store and user source.
type replay struct {
	cfg   *ServerConfig
	log   *logrus.Entry
	local *stages.LocalSaltStore // nil with a shared store
	rdb   *redis.Client          // nil with the local store
	users *stages.UserKeys       // nil on a single-user server
	// mu guards what the user poller and a config reload share.
	mu sync.Mutex
	// parsed caches user keys by their config text (passphrases are slow
	// to stretch).
	parsed map[string]*wire.PSK
	// clients are the config file's users in force (a reload replaces them).
	clients map[string]string
	// stored is the clients hash last applied (only before Run, then by
	// the poller).
	stored map[string]string
	wg     sync.WaitGroup
}

func newReplay(cfg *ServerConfig, log *logrus.Entry) (*replay, error) {
	r := &replay{cfg: cfg, log: log, parsed: map[string]*wire.PSK{}, clients: cfg.Clients}
	if len(cfg.Clients) > 0 || cfg.ClientsFromStore {
		m, bad := r.parseClients(cfg.Clients, true)
		if bad != nil {
			return nil, bad
		}
		r.users = stages.NewUserKeys(m)
	}
	if cfg.ReplayStore == "" {
		r.local = stages.NewLocalSaltStore(cfg.ReplayWindow, cfg.SaltCache, cfg.SaltQuota, time.Now())
		if cfg.ReplayState == "" {
			log.Warn("no replay_state file: a first flight recorded shortly before a restart from a client whose clock runs ahead can be replayed after it")
			return r, nil
		}
		return r, r.restore()
	}
	rdb, err := redisstore.Connect(cfg.ReplayStore)
	if err != nil {
		return nil, &ConfigError{"server.replay_store", err.Error()}
	}
	r.rdb = rdb
	if err := redisstore.Ping(context.Background(), rdb); err != nil {
		log.WithError(err).Error("replay store unreachable at start: new handshakes are refused until it answers")
	}
	if cfg.ClientsFromStore {
		u := r.poller()
		if m, err := u.Load(context.Background()); err != nil {
			log.WithError(err).Error("cannot read the users from the store; only those of the config file for now")
		} else {
			u.Apply(m)
		}
	}
	return r, nil
}

// store is the stages.SaltStore to give the handshake.
func (r *replay) store() stages.SaltStore {
	if r.local != nil {
		return r.local
	}
	keep := 2*r.cfg.ReplayWindow + 5*time.Second // margin for replicas' clocks
	return redisstore.NewSaltStore(r.rdb, redisstore.DefaultPrefix, keep, r.cfg.SaltQuota, r.log.WithField("store", "redis"))
}

// parseClients parses name → key; from the config file a bad key is an
// error, from the store it is logged and skipped. The caller holds mu, or
// runs before the server does.
func (r *replay) parseClients(clients map[string]string, fromFile bool) (map[wire.UserID]*wire.PSK, error) {
	names := make([]string, 0, len(clients))
	for n := range clients {
		names = append(names, n)
	}
	sort.Strings(names)
	m := make(map[wire.UserID]*wire.PSK, len(clients))
	for _, name := range names {
		k := clients[name]
		psk := r.parsed[k]
		if psk == nil {
			p, err := wire.ParseKey(k)
			if err != nil {
				if fromFile {
					return nil, &ConfigError{"server.clients." + name, err.Error()}
				}
				r.log.WithFields(logrus.Fields{"client": name, "error": err.Error()}).Error("bad key in the store's clients; skipped")
				continue
			}
			psk = &p
			r.parsed[k] = psk
		}
		id := wire.UserIDOf(psk)
		if _, dup := m[id]; dup && fromFile {
			return nil, &ConfigError{"server.clients." + name, "the same key as another client"}
		}
		m[id] = psk
	}
	return m, nil
}

func (r *replay) poller() *redisstore.Users {
	return &redisstore.Users{RDB: r.rdb, Prefix: redisstore.DefaultPrefix, Interval: r.cfg.ClientsRefresh,
		Log: r.log.WithField("store", "redis"), Apply: func(stored map[string]string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			m := r.merged(r.clients, stored)
			r.users.Set(m)
			r.stored = stored
			r.log.WithField("users", len(m)).Info("users updated from the store")
		}}
}

// merged is the users of the config file and of the store together (the
// caller holds mu).
func (r *replay) merged(file, stored map[string]string) map[wire.UserID]*wire.PSK {
	all := make(map[string]string, len(stored)+len(file))
	for n, k := range file {
		all["file:"+n] = k
	}
	for n, k := range stored {
		all[n] = k
	}
	m, _ := r.parseClients(all, false)
	return m
}

// reloadUsers parses the users of a reloaded config file (an error names
// the bad entry) and returns the function that puts them in force: from
// then on handshakes admit exactly these users (and the store's, with
// clients_from_store), and names maps their ids to names.
func (r *replay) reloadUsers(clients map[string]string) (apply func() (names map[wire.UserID]string), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.parseClients(clients, true)
	if err != nil {
		return nil, err
	}
	return func() map[wire.UserID]string {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.clients = clients
		if r.cfg.ClientsFromStore {
			m = r.merged(clients, r.stored)
		}
		r.users.Set(m)
		return userNames(clients, r.parsed)
	}, nil
}

// names maps the ids of the config file's users to their names.
func (r *replay) names() map[wire.UserID]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return userNames(r.clients, r.parsed)
}

// restore loads the local store's state file, if there is one.
func (r *replay) restore() error {
	b, err := os.ReadFile(r.cfg.ReplayState)
	if errors.Is(err, fs.ErrNotExist) {
		r.log.WithField("file", r.cfg.ReplayState).Info("no replay state saved yet: flights stamped before this start are refused")
		return nil
	}
	if err != nil {
		return &ConfigError{"server.replay_state", err.Error()}
	}
	clean, err := r.local.RestoreState(b, time.Now())
	entry := r.log.WithFields(logrus.Fields{"file": r.cfg.ReplayState, "salts": r.local.Len(),
		"refused_before": time.Unix(r.local.Floor(), 0).UTC().Format(time.RFC3339)})
	switch {
	case err != nil:
		entry.WithError(err).Error("replay state unreadable: refusing every timestamp the last run could have accepted")
	case clean:
		entry.Info("replay state restored")
	default:
		entry.Warn("replay state restored after an unclean stop: refusing timestamps a lost salt could carry")
	}
	return nil
}

// save writes the state file (atomically: a temporary file renamed over
// it) and, if the run goes on, arms the store's deadline.
func (r *replay) save(clean bool) error {
	start := time.Now()
	validTo := start.Add(2 * ReplayStatePeriod)
	if clean {
		validTo = time.Time{}
	}
	dir, base := filepath.Split(r.cfg.ReplayState)
	f, err := os.CreateTemp(dir, base+".tmp*")
	if err != nil {
		return err
	}
	err = r.local.SaveState(f, clean, start, validTo)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), r.cfg.ReplayState)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("replay state: %w", err)
	}
	if !clean {
		r.local.ArmDeadline(validTo)
	}
	return nil
}

// start runs the state saver and the user poller until ctx is done; the
// returned func waits for them, saves the final state and closes the
// store connection. It is called once the server listens.
func (r *replay) start(ctx context.Context) (stop func(), err error) {
	if r.local != nil && r.cfg.ReplayState != "" {
		if err := r.save(false); err != nil {
			return nil, err
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			t := time.NewTicker(ReplayStatePeriod)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if err := r.save(false); err != nil {
					r.log.WithError(err).Error("replay state not saved: new handshakes are refused if this goes on")
				}
			}
		}()
	}
	if r.rdb != nil && r.cfg.ClientsFromStore {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.poller().Run(ctx, r.stored)
		}()
	}
	return func() {
		r.wg.Wait()
		if r.local != nil && r.cfg.ReplayState != "" {
			if err := r.save(true); err != nil {
				r.log.WithError(err).Error("replay state not saved at stop: the next start refuses recent timestamps")
			}
		}
		if r.rdb != nil {
			_ = r.rdb.Close()
		}
	}, nil
}
