package stages

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"usocks/wire"
)

func salt(i int) *[wire.SaltSize]byte {
	var s [wire.SaltSize]byte
	copy(s[:], fmt.Sprintf("salt %d", i))
	return &s
}

func user(i byte) wire.UserID { return wire.UserID{i} }

func TestLocalSaltStore(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	ctx := context.Background()
	type step struct {
		user wire.UserID
		salt int
		ts   int64 // relative to t0
		now  time.Duration
		want error
	}
	cases := []struct {
		name       string
		max, quota int
		steps      []step
	}{
		{"fresh, then replayed", 10, 0, []step{
			{user(0), 1, 0, 0, nil},
			{user(0), 2, 0, 0, nil},
			{user(0), 1, 0, time.Second, ErrReplay},
			{user(0), 1, 5, 10 * time.Second, ErrReplay}, // same salt, other timestamp
		}},
		{"full refuses rather than forgets", 2, 0, []step{
			{user(0), 1, 0, 0, nil},
			{user(0), 2, 0, 0, nil},
			{user(0), 3, 0, time.Second, ErrSaltQuota},
			{user(0), 1, 0, time.Second, ErrReplay},
		}},
		{"expiry makes room", 2, 0, []step{
			{user(0), 1, 0, 0, nil},
			{user(0), 2, 0, 0, nil},
			{user(0), 3, 70, 70 * time.Second, nil},
			{user(0), 4, 70, 70 * time.Second, nil},
			{user(0), 1, 0, 70 * time.Second, ErrStale}, // its flight is too old
		}},
		{"one user cannot fill the store", 10, 3, []step{
			{user(1), 1, 0, 0, nil},
			{user(1), 2, 0, 0, nil},
			{user(1), 3, 0, 0, nil},
			{user(1), 4, 0, 0, ErrSaltQuota},
			{user(2), 5, 0, 0, nil},
			{user(2), 6, 0, 0, nil},
			{user(1), 7, 40, 40 * time.Second, nil}, // quota freed by expiry
		}},
		{"a wall clock stepping back does not revive a salt", 10, 0, []step{
			{user(0), 1, 0, 0, nil},
			{user(0), 2, 100, 100 * time.Second, nil}, // salt 1's bucket is dropped
			{user(0), 1, 0, 0, ErrStale},              // clock back 100 s: floor holds
			{user(0), 3, 0, 0, ErrStale},
			{user(0), 4, 75, 75 * time.Second, nil},
		}},
		{"timestamps before start", 10, 0, []step{
			{user(0), 1, -1, 0, ErrStale},
			{user(0), 2, -1, time.Second, ErrStale},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := NewLocalSaltStore(30*time.Second, c.max, c.quota, t0)
			for i, st := range c.steps {
				err := s.Insert(ctx, st.user, salt(st.salt), uint64(t0.Unix()+st.ts), t0.Add(st.now))
				if !errors.Is(err, st.want) || (st.want == nil && err != nil) {
					t.Fatalf("step %d (salt %d): %v, want %v", i, st.salt, err, st.want)
				}
			}
		})
	}
}

// TestSaltStoreStartWithoutState: without saved state, flights stamped
// before the start second are refused and a client connecting at once is
// not (the documented limit: only a state file covers the start second
// and fast client clocks; TestSaltStoreRestart).
func TestSaltStoreStartWithoutState(t *testing.T) {
	start := time.Unix(1_000_000, 500_000_000)
	s := NewLocalSaltStore(30*time.Second, 10, 0, start)
	if err := s.Insert(context.Background(), user(0), salt(1), uint64(start.Unix()-1), start.Add(time.Millisecond)); !errors.Is(err, ErrStale) {
		t.Fatalf("a timestamp before the start second: %v, want ErrStale", err)
	}
	if err := s.Insert(context.Background(), user(0), salt(2), uint64(start.Unix()), start.Add(time.Millisecond)); err != nil {
		t.Fatalf("a client connecting right after the start: %v", err)
	}
}

// TestSaltStoreRestart (issue 11.6): a flight from a client whose clock
// runs ahead, accepted before a restart, is refused after it: from a clean
// state file by its salt, after a crash by the floor.
func TestSaltStoreRestart(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	ctx := context.Background()
	fast := uint64(t0.Unix() + 25) // the client's clock is 25 s ahead
	t.Run("clean stop", func(t *testing.T) {
		a := NewLocalSaltStore(30*time.Second, 100, 0, t0.Add(-time.Hour))
		if err := a.Insert(ctx, user(0), salt(1), fast, t0); err != nil {
			t.Fatal(err)
		}
		var file bytes.Buffer
		if err := a.SaveState(&file, true, t0.Add(time.Second), time.Time{}); err != nil {
			t.Fatal(err)
		}
		restart := t0.Add(2 * time.Second)
		b := NewLocalSaltStore(30*time.Second, 100, 0, restart)
		if clean, err := b.RestoreState(file.Bytes(), restart); err != nil || !clean {
			t.Fatalf("restore: clean %v, %v", clean, err)
		}
		if err := b.Insert(ctx, user(0), salt(1), fast, restart); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay after a restart: %v, want ErrReplay", err)
		}
		if err := b.Insert(ctx, user(0), salt(2), uint64(restart.Unix()), restart); err != nil {
			t.Fatalf("a fresh flight after a clean restart: %v", err)
		}
	})
	t.Run("crash", func(t *testing.T) {
		a := NewLocalSaltStore(30*time.Second, 100, 0, t0.Add(-time.Hour))
		var file bytes.Buffer
		validTo := t0.Add(10 * time.Second)
		if err := a.SaveState(&file, false, t0, validTo); err != nil {
			t.Fatal(err)
		}
		// Accepted after the last save, then the process dies.
		if err := a.Insert(ctx, user(0), salt(1), fast, t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		restart := t0.Add(3 * time.Second)
		b := NewLocalSaltStore(30*time.Second, 100, 0, restart)
		if clean, err := b.RestoreState(file.Bytes(), restart); err != nil || clean {
			t.Fatalf("restore: clean %v, %v", clean, err)
		}
		if err := b.Insert(ctx, user(0), salt(1), fast, restart); !errors.Is(err, ErrStale) {
			t.Fatalf("replay after a crash: %v, want ErrStale", err)
		}
		later := validTo.Add(31 * time.Second)
		if err := b.Insert(ctx, user(0), salt(2), uint64(later.Unix()), later); err != nil {
			t.Fatalf("a fresh flight once the lost salts expired: %v", err)
		}
	})
	t.Run("damaged file", func(t *testing.T) {
		a := NewLocalSaltStore(30*time.Second, 100, 0, t0)
		var file bytes.Buffer
		_ = a.SaveState(&file, true, t0, time.Time{})
		bad := file.Bytes()
		bad[len(bad)/2] ^= 1
		b := NewLocalSaltStore(30*time.Second, 100, 0, t0)
		if _, err := b.RestoreState(bad, t0); !errors.Is(err, ErrBadState) {
			t.Fatalf("damaged file: %v", err)
		}
		if err := b.Insert(ctx, user(0), salt(1), uint64(t0.Unix()+30), t0); !errors.Is(err, ErrStale) {
			t.Fatalf("after a damaged file every acceptable timestamp must be refused: %v", err)
		}
	})
}

// TestSaltStoreDeadline: a store whose state was not saved in time fails
// closed.
func TestSaltStoreDeadline(t *testing.T) {
	s := NewLocalSaltStore(30*time.Second, 100, 0, time.Now().Add(-time.Minute))
	s.ArmDeadline(time.Now().Add(-time.Millisecond))
	if err := s.Insert(context.Background(), user(0), salt(1), uint64(time.Now().Unix()), time.Now()); !errors.Is(err, ErrStoreDown) {
		t.Fatalf("past the deadline: %v", err)
	}
	s.ArmDeadline(time.Now().Add(time.Minute))
	if err := s.Insert(context.Background(), user(0), salt(1), uint64(time.Now().Unix()), time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestSaltStateRoundTrip(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	a := NewLocalSaltStore(60*time.Second, 1000, 0, t0.Add(-time.Hour))
	for i := 0; i < 300; i++ {
		if err := a.Insert(context.Background(), user(byte(i%7)), salt(i), uint64(t0.Unix()-50+int64(i%100)), t0); err != nil {
			t.Fatal(err)
		}
	}
	var file bytes.Buffer
	if err := a.SaveState(&file, true, t0, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// A different replay window (bucket width) on the next run.
	b := NewLocalSaltStore(90*time.Second, 1000, 0, t0)
	if _, err := b.RestoreState(file.Bytes(), t0); err != nil {
		t.Fatal(err)
	}
	if b.Len() != 300 {
		t.Fatalf("restored %d salts, want 300", b.Len())
	}
	for i := 0; i < 300; i++ {
		if err := b.Insert(context.Background(), user(0), salt(i), uint64(t0.Unix()), t0); !errors.Is(err, ErrReplay) {
			t.Fatalf("salt %d after restore: %v", i, err)
		}
	}
	for n := 0; n < file.Len(); n += 97 {
		if _, err := parseSaltState(file.Bytes()[:n]); err == nil {
			t.Fatalf("truncated at %d: accepted", n)
		}
	}
}

func FuzzSaltState(f *testing.F) {
	a := NewLocalSaltStore(30*time.Second, 100, 0, time.Unix(1000, 0))
	_ = a.Insert(context.Background(), user(1), salt(1), 1000, time.Unix(1000, 0))
	var file bytes.Buffer
	_ = a.SaveState(&file, false, time.Unix(1000, 0), time.Unix(1010, 0))
	f.Add(file.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseSaltState(b)
	})
}

// TestHandshakeRestartReplay (issue 11.6) runs the whole handshake: a
// first flight from a client 25 s ahead, answered before a restart, gets
// the invalid-input reaction after it.
func TestHandshakeRestartReplay(t *testing.T) {
	var psk wire.PSK
	_, _ = rand.Read(psk[:])
	cli := &ClientHandshake{PSK: &psk, Cipher: wire.CipherChaCha20Poly1305, Rand: rand.Reader, Now: func() time.Time { return time.Now().Add(25 * time.Second) }, Timeout: 5 * time.Second}
	recorded := &recordConn{}
	cc, sc := tcpPair(t)
	recorded.Conn = cc
	srv := testServerHandshake(&psk)
	go func() { _, _ = cli.Run(context.Background(), recorded) }()
	if _, err := srv.Accept(context.Background(), sc, time.Now()); err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if err := srv.Salts.(*LocalSaltStore).SaveState(&file, true, time.Now(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	// The restarted server.
	restart := time.Now()
	store := NewLocalSaltStore(DefaultSkew, 1000, 0, restart)
	if _, err := store.RestoreState(file.Bytes(), restart); err != nil {
		t.Fatal(err)
	}
	srv2 := testServerHandshake(&psk)
	srv2.Salts = store
	cc2, sc2 := tcpPair(t)
	go func() { _, _ = cc2.Write(recorded.sent.Bytes()) }()
	if _, err := srv2.Handshake(context.Background(), sc2, time.Now()); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed flight after a restart: %v, want a rejection for replay", err)
	}
}

type recordConn struct {
	net.Conn
	sent bytes.Buffer
}

func (c *recordConn) Write(b []byte) (int, error) {
	c.sent.Write(b)
	return c.Conn.Write(b)
}

// BenchmarkSaltStoreFull: the cost of a handshake's insert into a store
// already holding a million salts (the old cache scanned all of them
// under its lock once full).
func BenchmarkSaltStoreFull(b *testing.B) {
	t0 := time.Unix(1_000_000, 0)
	s := NewLocalSaltStore(30*time.Second, 1_000_000+b.N, 0, t0.Add(-time.Hour))
	for i := 0; i < 1_000_000; i++ {
		_ = s.Insert(context.Background(), user(0), salt(i), uint64(t0.Unix()), t0)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Insert(context.Background(), user(0), salt(2_000_000+i), uint64(t0.Unix()), t0); err != nil {
			b.Fatal(err)
		}
	}
}
