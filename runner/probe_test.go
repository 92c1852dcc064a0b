package runner

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"usocks/wire"
)

// wantDrainReaction checks the one reaction to invalid input: nothing back,
// FIN (never RST) at the server's fixed deadline after accept.
func wantDrainReaction(t *testing.T, name string, r probeReaction, el, deadline time.Duration) {
	t.Helper()
	if r.bytesBack != 0 || r.how != "FIN" {
		t.Errorf("%s: %d bytes back, %s; want 0 bytes and FIN", name, r.bytesBack, r.how)
	}
	if el < deadline-50*time.Millisecond || el > deadline+2*time.Second {
		t.Errorf("%s: closed after %v, want the fixed %v", name, el, deadline)
	}
}

// probeAll sends each probe on its own connection, all at once, and checks
// that each gets the drain reaction.
func probeAll(t *testing.T, addr string, probes map[string][]byte, deadline time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for name, b := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, el := probe(addr, b, deadline+3*time.Second)
			mu.Lock()
			defer mu.Unlock()
			wantDrainReaction(t, name, r, el, deadline)
		}()
	}
	wg.Wait()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// TestProbeReactionIgnoresLength: how much a prober sends changes nothing.
// A per-server byte cap (close at once after 59 + D bytes, RST past
// another 64 KiB) was a threshold a scanner could measure.
func TestProbeReactionIgnoresLength(t *testing.T) {
	const deadline = 800 * time.Millisecond
	tn := startTunnel(t, tunnelOpts{targetPort: 1, noClient: true, probe: deadline})
	probes := map[string][]byte{}
	for _, n := range []int{58, 59, 60, 70_000, 140_000, 200_000, 400_000} {
		probes["random/"+portString(n)] = randomBytes(n)
	}
	probeAll(t, tn.serverAddr(), probes, deadline)
}

// TestProbeReactionMultiUserIgnoresLength: at a multi-user server a
// captured flight's salt and identity hint (a known user) followed by junk
// gets the same reaction as an unknown user's, however long the junk: no
// byte count runs from where the handshake stopped reading.
func TestProbeReactionMultiUserIgnoresLength(t *testing.T) {
	const deadline = 800 * time.Millisecond
	identity, alice := newKey(t), newKey(t)
	srv := startMultiUserServer(t, identity, map[string]string{"alice": alice}, 1, deadline)
	idKey, err := wire.ParseKey(identity)
	if err != nil {
		t.Fatal(err)
	}
	userKey, err := wire.ParseKey(alice)
	if err != nil {
		t.Fatal(err)
	}
	head := func(user *wire.PSK) []byte {
		var salt [wire.SaltSize]byte
		_, _ = rand.Read(salt[:])
		hint := wire.SealIdentityHint(&idKey, &salt, user)
		return append(salt[:], hint[:]...)
	}
	var stranger wire.PSK
	_, _ = rand.Read(stranger[:])
	probes := map[string][]byte{}
	for _, n := range []int{0, 11, 5_000, 70_000, 140_000, 300_000} {
		probes["known user + "+portString(n)] = append(head(&userKey), randomBytes(n)...)
		probes["unknown user + "+portString(n)] = append(head(&stranger), randomBytes(n)...)
	}
	probeAll(t, srv.Addr().String(), probes, deadline)
}

// TestProbeReactionUnderSaturation: with every waiting slot taken by junk
// connections, probes still get the one reaction (no immediate close, no
// RST), a real client still gets a session, and the junk connections that
// made room were ended with FIN, never RST.
func TestProbeReactionUnderSaturation(t *testing.T) {
	const deadline = 1500 * time.Millisecond
	const slots = 8
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true, probe: deadline, maxPending: slots})
	tn.waitSession()
	var junk []net.Conn
	for range slots {
		c, err := net.Dial("tcp", tn.serverAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write(randomBytes(10)) // short of a first flight: waits
		junk = append(junk, c)
	}
	waitFor(t, "the waiting pool to fill", 5*time.Second, func() bool { return tn.srv.waiting.len() == slots })

	probes := map[string][]byte{}
	for _, n := range []int{1, 58, 100, 5000} {
		probes["random/"+portString(n)] = randomBytes(n)
	}
	sessions := tn.srv.Sessions.Load()
	start := time.Now()
	tn.relay.cut() // the real client reconnects while the pool is full
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); probeAll(t, tn.serverAddr(), probes, deadline) }()
	tn.waitSession()
	t.Logf("real client's new session %v after the cut, pool full", time.Since(start).Round(time.Millisecond))
	wg.Wait()
	if tn.srv.Sessions.Load() <= sessions {
		t.Fatal("no new session while the pool was full")
	}
	if err := echoThrough(context.Background(), tn, 10_000, 3); err != nil {
		t.Fatal(err)
	}
	if ev := tn.srv.Evicted(); ev < int64(len(probes)) {
		t.Errorf("evicted %d, want at least %d (one per probe)", ev, len(probes))
	}
	for i, c := range junk {
		_ = c.SetReadDeadline(time.Now().Add(deadline + 3*time.Second))
		n, err := io.Copy(io.Discard, c)
		if err != nil || n != 0 {
			t.Errorf("junk %d: %d bytes back, %v; want nothing and FIN", i, n, err)
		}
	}
}
