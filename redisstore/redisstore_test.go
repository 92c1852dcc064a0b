package redisstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"

	"usocks/internal/redistest"
	"usocks/stages"
	"usocks/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func salt(i int) *[wire.SaltSize]byte {
	var s [wire.SaltSize]byte
	copy(s[:], fmt.Sprintf("salt %d", i))
	return &s
}

func newStore(t *testing.T, url string, quota int) (*SaltStore, *test.Hook) {
	rdb, err := Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	l, hook := test.NewNullLogger()
	return NewSaltStore(rdb, DefaultPrefix, time.Minute, quota, logrus.NewEntry(l)), hook
}

func TestSaltStore(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	now := time.Now()
	a, _ := newStore(t, rs.URL(0), 3)
	b, _ := newStore(t, rs.URL(0), 3) // another replica
	other, _ := newStore(t, rs.URL(1), 3)
	alice, bob := wire.UserID{1}, wire.UserID{2}
	steps := []struct {
		s    *SaltStore
		user wire.UserID
		salt int
		want error
	}{
		{a, alice, 1, nil},
		{b, alice, 1, stages.ErrReplay}, // seen by the other replica
		{a, alice, 1, stages.ErrReplay},
		{other, alice, 1, nil}, // another database is another store
		{b, alice, 2, nil},
		{a, alice, 3, nil},
		{b, alice, 4, stages.ErrSaltQuota}, // alice holds her quota
		{b, alice, 3, stages.ErrReplay},    // a replay is still a replay
		{a, bob, 4, nil},                   // bob is not held up
	}
	for i, st := range steps {
		err := st.s.Insert(ctx, st.user, salt(st.salt), uint64(now.Unix()), now)
		if !errors.Is(err, st.want) || (st.want == nil && err != nil) {
			t.Fatalf("step %d: %v, want %v", i, err, st.want)
		}
	}
	rdb, _ := Connect(rs.URL(0))
	defer rdb.Close()
	ttl, err := rdb.PTTL(ctx, DefaultPrefix+"salt:"+fmt.Sprintf("%x", salt(1)[:])).Result()
	if err != nil || ttl <= 50*time.Second || ttl > time.Minute {
		t.Fatalf("salt TTL %v (%v), want about the keep time", ttl, err)
	}
}

// TestSaltStoreDown: an unreachable store refuses (never accepts), says
// so once in the log, counts every failure and recovers by itself.
func TestSaltStoreDown(t *testing.T) {
	rs := redistest.Start(t)
	s, hook := newStore(t, rs.URL(0), 0)
	now := time.Now()
	if err := s.Insert(context.Background(), wire.UserID{}, salt(1), uint64(now.Unix()), now); err != nil {
		t.Fatal(err)
	}
	rs.Stop()
	for i := 0; i < 3; i++ {
		if err := s.Insert(context.Background(), wire.UserID{}, salt(10+i), uint64(now.Unix()), now); !errors.Is(err, stages.ErrStoreDown) {
			t.Fatalf("store stopped: %v, want ErrStoreDown", err)
		}
	}
	if s.Failures.Load() != 3 {
		t.Fatalf("failures = %d, want 3", s.Failures.Load())
	}
	n := 0
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d error lines, want one when the store became unreachable", n)
	}
}

// BenchmarkInsert is one handshake's cost in the shared store: one round
// trip to a loopback redis-server (compare stages' BenchmarkSaltStoreFull
// for the local store).
func BenchmarkInsert(b *testing.B) {
	rs := redistest.Start(b)
	rdb, err := Connect(rs.URL(0))
	if err != nil {
		b.Fatal(err)
	}
	defer rdb.Close()
	l, _ := test.NewNullLogger()
	s := NewSaltStore(rdb, DefaultPrefix, time.Minute, 0, logrus.NewEntry(l))
	now := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Insert(context.Background(), wire.UserID{}, salt(i), uint64(now.Unix()), now); err != nil {
			b.Fatal(err)
		}
	}
}
