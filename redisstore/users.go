package redisstore

import (
	"context"
	"maps"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
)

// Users polls the clients hash (client name → key) so that every replica
// sees users added or revoked within Interval.
type Users struct {
	RDB      *redis.Client
	Prefix   string
	Interval time.Duration
	// Apply is called with the whole hash whenever it changed (and once
	// after the first successful read). It is not called while the store
	// is unreachable: the last known users stay.
	Apply func(clients map[string]string)
	Log   *logrus.Entry
}

// Load reads the hash once.
func (u *Users) Load(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	return u.RDB.HGetAll(ctx, u.Prefix+"clients").Result()
}

// Run polls until ctx is done. last is what Apply was last given.
func (u *Users) Run(ctx context.Context, last map[string]string) {
	t := time.NewTicker(u.Interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m, err := u.Load(ctx)
		if err != nil {
			if !failing && ctx.Err() == nil {
				u.Log.WithError(err).Error("cannot read the users from the store; keeping the last known ones")
			}
			failing = true
			continue
		}
		failing = false
		if !maps.Equal(m, last) {
			u.Apply(m)
			last = m
		}
	}
}
