package runner

import (
	"context"
	"testing"
	"time"

	"usocks/internal/faultproxy"
)

// faultTunnel is a resumable tunnel whose client reaches the server
// through a fault proxy running script.
func faultTunnel(t *testing.T, script faultproxy.Script, keepalive time.Duration) (*tunnel, *faultproxy.Proxy) {
	return proxiedTunnel(t, tunnelOpts{resume: 30 * time.Second, keepalive: keepalive}, script)
}

// proxiedTunnel starts a tunnel with options o (the target and the
// client's path filled in) whose client reaches the server through a
// fault proxy running script, and waits for its session.
func proxiedTunnel(t *testing.T, o tunnelOpts, script faultproxy.Script) (*tunnel, *faultproxy.Proxy) {
	tg := startTarget(t)
	var proxy *faultproxy.Proxy
	o.targetPort = tg.port()
	o.via = func(server string) string {
		var err error
		if proxy, err = faultproxy.New(faultproxy.Options{Target: server, Script: script}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = proxy.Close() })
		return proxy.Addr()
	}
	tn := startTunnel(t, o)
	tn.waitSession()
	return tn, proxy
}

// TestResumeFaults runs transfers through the fault proxy
// (internal/faultproxy) with one scripted fault on the session's first
// backend connection (and, for the handshake case, on the resuming one):
// every transfer completes byte for byte on the resumed session.
func TestResumeFaults(t *testing.T) {
	type transfer int
	const (
		down transfer = iota // 4 MiB download
		echo                 // 2 MiB echo (upload and download)
	)
	cases := []struct {
		name      string
		script    faultproxy.Script
		xfer      transfer
		keepalive time.Duration // client keepalive (0: default)
		resumes   int64         // at least
	}{
		{"RST down at 4 KiB (first records)", faultproxy.Script{0: {{Dir: faultproxy.Down, At: 4 << 10, Action: faultproxy.RST}}}, down, 0, 1},
		{"RST down at 100 KiB", faultproxy.Script{0: {{Dir: faultproxy.Down, At: 100 << 10, Action: faultproxy.RST}}}, down, 0, 1},
		{"RST down at 3 MiB", faultproxy.Script{0: {{Dir: faultproxy.Down, At: 3 << 20, Action: faultproxy.RST}}}, down, 0, 1},
		{"FIN down at 100 KiB", faultproxy.Script{0: {{Dir: faultproxy.Down, At: 100 << 10, Action: faultproxy.FIN}}}, down, 0, 1},
		{"RST up at 500 KiB", faultproxy.Script{0: {{Dir: faultproxy.Up, At: 500 << 10, Action: faultproxy.RST}}}, echo, 0, 1},
		{"FIN up at 1 MiB", faultproxy.Script{0: {{Dir: faultproxy.Up, At: 1 << 20, Action: faultproxy.FIN}}}, echo, 0, 1},
		{"cuts on three connections in a row", faultproxy.Script{
			0: {{Dir: faultproxy.Down, At: 300 << 10, Action: faultproxy.RST}},
			1: {{Dir: faultproxy.Down, At: 300 << 10, Action: faultproxy.RST}},
			2: {{Dir: faultproxy.Up, At: 200 << 10, Action: faultproxy.FIN}},
		}, echo, 0, 3},
		{"RST in the resuming handshake's reply", faultproxy.Script{
			0: {{Dir: faultproxy.Down, At: 200 << 10, Action: faultproxy.RST}},
			1: {{Dir: faultproxy.Down, At: 20, Action: faultproxy.RST}},
		}, down, 0, 1},
		{"RST in the resuming handshake's flight", faultproxy.Script{
			0: {{Dir: faultproxy.Down, At: 200 << 10, Action: faultproxy.RST}},
			1: {{Dir: faultproxy.Up, At: 50, Action: faultproxy.RST}},
		}, down, 0, 1},
		// The path stops carrying data down: the client's keepalive
		// drops it and resumes.
		{"stall down (keepalive)", faultproxy.Script{0: {{Dir: faultproxy.Down, At: 500 << 10, Action: faultproxy.Stall}}}, down, 200 * time.Millisecond, 1},
		{"1-byte fragments for the first 64 KiB", faultproxy.Script{
			0: {{Dir: faultproxy.Down, At: 0, Action: faultproxy.Fragment, Len: 64 << 10}, {Dir: faultproxy.Up, At: 0, Action: faultproxy.Fragment, Len: 8 << 10}},
		}, down, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tn, proxy := faultTunnel(t, tc.script, tc.keepalive)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var err error
			if tc.xfer == down {
				err = download(ctx, tn, 4<<20, nil)
			} else {
				err = echoThrough(ctx, tn, 2<<20, 11)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tn.cli.Resumes.Load(); got < tc.resumes {
				t.Errorf("resumptions = %d, want at least %d", got, tc.resumes)
			}
			if got := tn.srv.Failed.Load(); got != 0 {
				t.Errorf("server sessions failed: %d", got)
			}
			t.Logf("connections %d, resumptions %d", proxy.Accepted(), tn.cli.Resumes.Load())
		})
	}
}

// TestResumeTakeover: the path stops in both directions without a word
// (a NAT that forgot the flow): the client's keepalive gives up on it and
// resumes on a new connection while the server still holds the old one,
// which the resumption then cuts (SPEC-v2.md §7b, case 2).
func TestResumeTakeover(t *testing.T) {
	tn, proxy := faultTunnel(t, nil, 200*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first, err := proxy.Conn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	stalled := false
	err = download(ctx, tn, 4<<20, func(n int64) {
		if n >= 1<<20 && !stalled {
			stalled = true
			first.Stall(faultproxy.Up)
			first.Stall(faultproxy.Down)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := tn.srv.resumes.TakenOver.Load(); got != 1 {
		t.Errorf("takeovers = %d, want 1", got)
	}
	if tn.cli.Resumes.Load() != 1 || tn.srv.Failed.Load() != 0 {
		t.Errorf("resumptions %d, failed sessions %d; want 1, 0", tn.cli.Resumes.Load(), tn.srv.Failed.Load())
	}
	first.Release()
}
