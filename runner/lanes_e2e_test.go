package runner

import (
	"context"
	"fmt"
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
	for _, how := range []faultproxy.Action{faultproxy.RST, faultproxy.FIN} {
		t.Run(how.String(), func(t *testing.T) {
			tn, proxy := lanesTunnel(t, nil)
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
			// The lane is replaced: a fifth connection joins.
			repl := lanesUp(t, proxy, 5)[4]
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
