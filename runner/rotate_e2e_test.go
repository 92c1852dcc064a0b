package runner

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// Rotation of a resumable session (SPEC-v2.md §6b): each rotation retires
// the backend and resumes the same session on a new one; a download and
// echoes that span many rotations arrive byte for byte, no stream is
// reset, no new session is opened.

func rotateTunnel(t *testing.T, backend string, after time.Duration, bytes int64) *tunnel {
	tg := startTarget(t)
	o := tunnelOpts{targetPort: tg.port(), backend: backend, resume: 30 * time.Second, rotate: after, rotateB: bytes}
	if backend == "ws" {
		o.path = "/tunnel"
	}
	tn := startTunnel(t, o)
	tn.waitSession()
	return tn
}

// checkOneSession fails unless every rotation resumed the one session.
func checkOneSession(t *testing.T, tn *tunnel, minRotations int64) {
	t.Helper()
	rot := tn.cli.Rotations.Load()
	if rot < minRotations {
		t.Errorf("rotations = %d, want at least %d", rot, minRotations)
	}
	if res := tn.cli.Resumes.Load(); res < rot {
		t.Errorf("resumptions = %d < rotations %d: a rotation did not resume", res, rot)
	}
	if r := tn.cli.Reconnects.Load(); r != 0 {
		t.Errorf("client opened %d new sessions: rotation must resume the session", r)
	}
	if f, c := tn.srv.Failed.Load(), tn.srv.Clean.Load(); f != 0 || c != 0 {
		t.Errorf("server sessions ended: %d failed, %d clean", f, c)
	}
	if r, rc := tn.srv.Stats.StreamsReset.Load(), tn.cli.Stats.StreamsReset.Load(); r != 0 || rc != 0 {
		t.Errorf("streams reset: server %d, client %d", r, rc)
	}
	if rot > 0 {
		t.Logf("%d rotations, mean pause %v (link retired → next link running), %d server handshakes",
			rot, time.Duration(tn.cli.RotationPause.Load()/rot), tn.srv.Sessions.Load())
	}
}

func TestRotateBytesResumes(t *testing.T) {
	for _, tc := range []struct {
		backend         string
		size            int64
		echoes, echoMiB int
	}{
		{"plain_tcp", 4 << 20, 4, 1},
		{"tls", 2 << 20, 1, 1},
		{"ws", 2 << 20, 1, 1},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			tn := rotateTunnel(t, tc.backend, 0, 256<<10)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			g, gctx := errgroup.WithContext(ctx)
			g.Go(func() error { return download(gctx, tn, tc.size, nil) })
			for i := range tc.echoes {
				g.Go(func() error { return echoThrough(gctx, tn, tc.echoMiB<<20, uint64(200+i)) })
			}
			if err := g.Wait(); err != nil {
				t.Fatal(err)
			}
			// Every byte crossed the backend at least once. A link
			// carries at most 320 KiB (the limit + 25 %) before the
			// client retires it, and then what the server had sent
			// before it saw the retirement: on loopback, up to the
			// sockets' buffers (about 0.7 MiB measured, 2 MiB allowed).
			total := tc.size + int64(2*tc.echoes*tc.echoMiB<<20)
			checkOneSession(t, tn, total/(320<<10+2<<20))
			// The session still carries new streams.
			if err := echoThrough(ctx, tn, 100_000, 3); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRotateAfterResumes(t *testing.T) {
	tn := rotateTunnel(t, "", 100*time.Millisecond, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	// Streams run until three rotations are through, paced so that they
	// span them (bounded: the context ends the test).
	for i := range 4 {
		g.Go(func() error {
			for j := 0; tn.cli.Rotations.Load() < 3; j++ {
				if err := echoThrough(gctx, tn, 256<<10, uint64(1000*i+j)); err != nil {
					return err
				}
				time.Sleep(10 * time.Millisecond) // pacing
			}
			return nil
		})
	}
	g.Go(func() error { return download(gctx, tn, 8<<20, nil) })
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	checkOneSession(t, tn, 3)
}

func TestRotateBytesValidated(t *testing.T) {
	for _, tc := range []struct {
		bytes int64
		ok    bool
	}{{0, true}, {MinRotateBytes, true}, {1 << 30, true}, {MinRotateBytes - 1, false}, {-1, false}} {
		cfg := &ClientConfig{Common: Common{Key: newKey(t), Backend: BackendConfig{Server: "127.0.0.1", Port: 1}}, RotateBytes: tc.bytes}
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("rotate_bytes %d: err = %v, want ok %v", tc.bytes, err, tc.ok)
		}
	}
}
