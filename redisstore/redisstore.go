// Package redisstore keeps what several usocks server replicas must share
// in one Redis (or Valkey): the salts of accepted first flights (replay
// protection, a stages.SaltStore) and, optionally, the users and their
// keys.
//
// Keys, under a prefix (default "usocks:"):
//
//	salt:<hex salt>             "1", expires after the replay window's keep
//	quota:<hex user id>:<w>     salts user inserted in window w (per-user quota)
//	clients                     hash: client name → key (base64 or passphrase)
package redisstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/wire"
)

// DefaultPrefix is put before every key.
const DefaultPrefix = "usocks:"

// Timeout bounds one round trip to the store: a handshake waits this long
// at most before it is refused.
const Timeout = time.Second

func init() {
	// The client library's own log lines (pool dial retries) would go to
	// stderr past the server's logger; the stores log what matters.
	redis.SetLogger(quiet{})
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// Connect parses a redis://[user:password@]host:port/db URL and returns a
// client that never retries on its own (a retried SET NX that had been
// applied would refuse a legitimate flight as a replay).
func Connect(url string) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	opt.MaxRetries = -1
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = Timeout, Timeout, Timeout
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(opt), nil
}

// SaltStore is a stages.SaltStore in Redis: one round trip (a script that
// runs SET NX PX, atomically with the quota check) per handshake.
type SaltStore struct {
	rdb    *redis.Client
	prefix string
	keep   time.Duration
	quota  int
	log    *logrus.Entry
	// Failures counts inserts the store could not answer (each refused a
	// handshake).
	Failures atomic.Int64
	down     atomic.Bool
}

// NewSaltStore returns a store that keeps each salt for keep (at least
// twice the replay window, plus the clock difference between replicas)
// and lets one user insert at most quota salts per keep (0: no limit).
func NewSaltStore(rdb *redis.Client, prefix string, keep time.Duration, quota int, log *logrus.Entry) *SaltStore {
	return &SaltStore{rdb: rdb, prefix: prefix, keep: keep, quota: quota, log: log}
}

// insertScript: KEYS salt key, quota counter; ARGV keep (ms), quota.
// Returns 1 (new), 0 (held: replay) or -1 (user over quota).
var insertScript = redis.NewScript(`
local q = tonumber(ARGV[2])
if q > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= q then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  return -1
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
if q > 0 and redis.call('INCR', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[1]))
end
return 1
`)

// Insert implements stages.SaltStore.
func (s *SaltStore) Insert(ctx context.Context, user wire.UserID, salt *[wire.SaltSize]byte, _ uint64, now time.Time) error {
	window := now.UnixMilli() / s.keep.Milliseconds()
	keys := []string{
		s.prefix + "salt:" + hex.EncodeToString(salt[:]),
		s.prefix + "quota:" + hex.EncodeToString(user[:]) + ":" + strconv.FormatInt(window, 10),
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	n, err := insertScript.Run(ctx, s.rdb, keys, s.keep.Milliseconds(), s.quota).Int()
	if err != nil {
		s.Failures.Add(1)
		if !s.down.Swap(true) {
			s.log.WithError(err).Error("replay store unreachable: refusing new handshakes until it answers again (running sessions continue)")
		}
		return fmt.Errorf("%w: %v", stages.ErrStoreDown, err)
	}
	if s.down.Swap(false) {
		s.log.Warn("replay store reachable again: accepting handshakes")
	}
	switch n {
	case 1:
		return nil
	case 0:
		return stages.ErrReplay
	default:
		return stages.ErrSaltQuota
	}
}

// Ping checks that the store answers (at start, so that a typo in the URL
// shows at once).
func Ping(ctx context.Context, rdb *redis.Client) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return errors.Join(stages.ErrStoreDown, err)
	}
	return nil
}
