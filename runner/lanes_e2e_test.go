package runner

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"usocks/internal/faultproxy"
)

// Sessions over lanes end to end (SPEC-v2.md §7d): backend multi_tcp
// with protocol v2 runs one session over `number` connections at once,
// each through a fault proxy that can kill it.

// lanesTunnel is a resumable multi_tcp tunnel whose connections go
// through a fault proxy running script.
func lanesTunnel(t *testing.T, script faultproxy.Script) (*tunnel, *faultproxy.Proxy) {
	return proxiedTunnel(t, tunnelOpts{resume: 30 * time.Second, backend: "multi_tcp"}, script)
}

// lanesUp waits until the proxy has seen n connections.
func lanesUp(t *testing.T, proxy *faultproxy.Proxy, n int) []*faultproxy.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conns := make([]*faultproxy.Conn, n)
	for i := range n {
		c, err := proxy.Conn(ctx, i)
		if err != nil {
			t.Fatalf("lane %d never connected: %v", i, err)
		}
		conns[i] = c
	}
	return conns
}

// TestLanesBulk: a download, an upload-and-echo and many concurrent
// echoes over four lanes, every byte SHA-256 checked; each lane carries
// a share of the download.
func TestLanesBulk(t *testing.T) {
	tn, proxy := lanesTunnel(t, nil)
	conns := lanesUp(t, proxy, 4)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 16 << 20
	if err := download(ctx, tn, n, nil); err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	g.Go(func() error { return echoThrough(ctx, tn, 4<<20, 3) })
	for i := range 40 {
		g.Go(func() error { return echoThrough(ctx, tn, 128<<10, uint64(100+i)) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var shares []string
	for i, c := range conns {
		down := c.Bytes(faultproxy.Down)
		shares = append(shares, fmt.Sprintf("%d KiB", down>>10))
		if down < n/16 {
			t.Errorf("lane %d carried %d bytes down of a %d-byte download", i, down, n)
		}
	}
	if got := proxy.Accepted(); got != 4 {
		t.Errorf("connections = %d, want 4", got)
	}
	if tn.srv.Failed.Load() != 0 || tn.cli.Resumes.Load() != 3 {
		t.Errorf("server sessions failed %d, client lanes joined %d (want 0, 3)", tn.srv.Failed.Load(), tn.cli.Resumes.Load())
	}
	t.Logf("bytes down per lane: %v", shares)
}

// TestLanesKillOne: one lane of four is killed (RST, then FIN) in the
// middle of a download; the download completes byte for byte and the
// client replaces the lane.
func TestLanesKillOne(t *testing.T) {
	for _, tc := range []struct {
		name   string
		how    faultproxy.Action
		script faultproxy.Script
	}{
		{"RST", faultproxy.RST, nil},
		{"FIN", faultproxy.FIN, nil},
		// The replacement's first try is cut inside its handshake.
		{"RST, then RST in the replacement's hello", faultproxy.RST, faultproxy.Script{4: {{Dir: faultproxy.Up, At: 50, Action: faultproxy.RST}}}},
	} {
		how := tc.how
		t.Run(tc.name, func(t *testing.T) {
			tn, proxy := lanesTunnel(t, tc.script)
			conns := lanesUp(t, proxy, 4)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			const n = 16 << 20
			killed := false
			err := download(ctx, tn, n, func(got int64) {
				if got >= 4<<20 && !killed {
					killed = true
					conns[2].Kill(how)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			// The lane is replaced: a fifth connection joins (a sixth
			// when the fifth was cut).
			repl := lanesUp(t, proxy, 5+len(tc.script))[4+len(tc.script)]
			if err := download(ctx, tn, 2<<20, nil); err != nil {
				t.Fatal(err)
			}
			if tn.srv.Failed.Load() != 0 {
				t.Errorf("server sessions failed: %d", tn.srv.Failed.Load())
			}
			t.Logf("killed lane carried %d KiB down; replacement %d KiB; connections %d",
				conns[2].Bytes(faultproxy.Down)>>10, repl.Bytes(faultproxy.Down)>>10, proxy.Accepted())
		})
	}
}

// TestLanesRotateBytes: rotate_bytes replaces lanes one by one while a
// download and an echo run: GOING_AWAY, the replacement dialled at once,
// nothing lost, duplicated or reset, and no session pause (the other
// lanes carry on).
func TestLanesRotateBytes(t *testing.T) {
	tn, proxy := proxiedTunnel(t, tunnelOpts{resume: 30 * time.Second, backend: "multi_tcp", rotateB: 512 << 10}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var g errgroup.Group
	g.Go(func() error { return download(ctx, tn, 8<<20, nil) })
	g.Go(func() error { return echoThrough(ctx, tn, 2<<20, 5) })
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := tn.cli.Rotations.Load(); got < 8 {
		t.Errorf("rotations = %d, want at least 8 (10 MiB both ways over 512 KiB lanes)", got)
	}
	if tn.srv.Failed.Load() != 0 {
		t.Errorf("server sessions failed: %d", tn.srv.Failed.Load())
	}
	t.Logf("rotations %d, connections %d", tn.cli.Rotations.Load(), proxy.Accepted())
}

// TestLanesReplayedJoinOpensNothing: the recorded first flight of a lane
// that joined the session, sent again by an attacker, gets silence and
// FIN (the salt store refuses it before the session is looked up), adds
// no lane, and the session goes on.
func TestLanesReplayedJoinOpensNothing(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true, backend: "multi_tcp", resume: 30 * time.Second})
	tn.waitSession()
	waitFor(t, "three lanes to join", 10*time.Second, func() bool { return tn.srv.resumes.Resumed.Load() == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := download(ctx, tn, 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	flight := tn.relay.first(1) // a joining lane's bytes
	if len(flight) < 108 {
		t.Fatalf("recorded flight of %d bytes", len(flight))
	}
	r, _ := probe(tn.serverAddr(), flight, 3*time.Second)
	if r.bytesBack != 0 || r.how != "FIN" {
		t.Fatalf("replayed lane hello: %+v; want silence, then FIN", r)
	}
	if tn.srv.resumes.Resumed.Load() != 3 || tn.srv.Sessions.Load() != 1 {
		t.Fatalf("a replayed lane hello reached the session: %d lanes joined, %d sessions", tn.srv.resumes.Resumed.Load(), tn.srv.Sessions.Load())
	}
	if err := echoThrough(ctx, tn, 1<<20, 5); err != nil {
		t.Fatal(err)
	}
}

// TestLanesAllCut: every lane is cut at once in the middle of a download
// (a network switch): the server detaches the session, the client's lanes
// come back and resume it, and the download completes byte for byte.
func TestLanesAllCut(t *testing.T) {
	tn, proxy := lanesTunnel(t, nil)
	conns := lanesUp(t, proxy, 4)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cut := false
	err := download(ctx, tn, 8<<20, func(got int64) {
		if got >= 2<<20 && !cut {
			cut = true
			for _, c := range conns {
				c.Kill(faultproxy.RST)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	lanesUp(t, proxy, 8)
	if tn.srv.Failed.Load() != 0 || tn.srv.Sessions.Load() != 1 {
		t.Errorf("server sessions %d, failed %d; want 1, 0", tn.srv.Sessions.Load(), tn.srv.Failed.Load())
	}
	t.Logf("connections %d, sessions detached %d", proxy.Accepted(), tn.srv.resumes.Detached.Load())
}

// TestLanesDetachedExpires: all lanes are cut and the client cannot come
// back within the server's resume_timeout: the session expires, its
// stream is reset, and the client's next lane hello starts a new session
// over lanes, under a new id, that carries new streams. (Each lane that
// was redialling gets "new" too: the client closes those connections,
// and the server drops what they started.)
func TestLanesDetachedExpires(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true, backend: "multi_tcp", resume: 30 * time.Second, srvResume: 200 * time.Millisecond})
	tn.waitSession()
	c := echoThenCut(t, tn)
	waitFor(t, "the detached session to expire", 10*time.Second, func() bool { return tn.srv.resumes.Expired.Load() == 1 })
	tn.relay.down.Store(false)
	if n, err := io.Copy(io.Discard, c); err == nil || n != 0 {
		t.Fatalf("stream of an expired session: read %d bytes, err %v; want a reset", n, err)
	}
	tn.waitSession()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 1<<20, 6); err != nil {
		t.Fatal(err)
	}
}

// TestLanesStallOne: one lane of four goes silent both ways in the middle
// of a download (a NAT that forgot the flow: no RST, no FIN) while the
// other lanes run. Lane liveness (SPEC-v2.md §7d) finds it: the lane is
// cut, what it carried is sent again on the others, and the client dials
// one replacement; the download completes byte for byte, no other lane
// is cut (the session keepalive, twice as long, never fires), and the
// replacement carries the next download.
func TestLanesStallOne(t *testing.T) {
	const keepalive = time.Second
	tn, proxy := proxiedTunnel(t, tunnelOpts{resume: 30 * time.Second, backend: "multi_tcp", keepalive: keepalive, srvKeepalive: keepalive}, nil)
	conns := lanesUp(t, proxy, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 16 << 20
	stalled := make(chan struct{})
	err := download(ctx, tn, n, func(got int64) {
		if got >= 4<<20 && stalled != nil {
			conns[2].Stall(faultproxy.Up)
			conns[2].Stall(faultproxy.Down)
			close(stalled)
			stalled = nil
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// Bounded: the replacement joins within a few lane timeouts.
	wctx, wcancel := context.WithTimeout(ctx, 8*keepalive)
	defer wcancel()
	repl, err := proxy.Conn(wctx, 4)
	if err != nil {
		t.Fatalf("the stalled lane was not replaced: %v", err)
	}
	before := make([]int64, 4)
	for i, c := range conns {
		before[i] = c.Bytes(faultproxy.Down)
	}
	if err := download(ctx, tn, 8<<20, nil); err != nil {
		t.Fatal(err)
	}
	if got := proxy.Accepted(); got != 5 {
		t.Errorf("connections = %d, want 5 (one lane replaced, no other cut)", got)
	}
	for i, c := range conns {
		if grew := c.Bytes(faultproxy.Down) - before[i]; (i == 2) != (grew == 0) {
			t.Errorf("lane %d carried %d bytes of the second download", i, grew)
		}
	}
	if repl.Bytes(faultproxy.Down) == 0 {
		t.Errorf("the replacement carried nothing")
	}
	if tn.srv.Failed.Load() != 0 {
		t.Errorf("server sessions failed: %d", tn.srv.Failed.Load())
	}
	t.Logf("stalled lane carried %d KiB down; replacement %d KiB; connections %d",
		conns[2].Bytes(faultproxy.Down)>>10, repl.Bytes(faultproxy.Down)>>10, proxy.Accepted())
}
