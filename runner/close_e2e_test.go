package runner

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"usocks/runner/capture"
)

// TestCleanEndSendsCloseBothWays: whichever side ends a session, each
// side sends CLOSE before its FIN (SPEC-v2.md §7), on v2 and v1. Each
// side's capture replays without an error (no "insecure close") and holds
// its own CLOSE going out and the peer's coming in. A v1 client used to
// answer a server's close record with FIN alone.
func TestCleanEndSendsCloseBothWays(t *testing.T) {
	for _, proto := range []string{"v2", "v1"} {
		for _, first := range []string{"server", "client"} {
			t.Run(proto+"/"+first+"-first", func(t *testing.T) {
				dir := t.TempDir()
				cpath, spath := filepath.Join(dir, "client.capture"), filepath.Join(dir, "server.capture")
				key := newKey(t)
				if proto == "v1" {
					key = "v1 close both ways key"
				}
				p := startDrainPairWith(t, 0, func(s *ServerConfig, c *ClientConfig) {
					s.Key, c.Key, s.Protocol, c.Protocol = key, key, proto, proto
					s.Capture, s.CapturePlaintext = spath, true
					c.Capture, c.CapturePlaintext = cpath, true
				})
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := echoThrough(ctx, &tunnel{cli: p.cli}, 3000, 9); err != nil {
					t.Fatal(err)
				}
				if first == "server" {
					p.stopSrv()
					p.waitStopped(t)
					waitFor(t, "the client to see the server's close", 10*time.Second, func() bool { return p.logged("session closed by server") })
					p.stopClient(t)
				} else {
					p.stopClient(t)
					waitFor(t, "the server's session to end", 10*time.Second, func() bool { return p.srv.Clean.Load()+p.srv.Failed.Load() == 1 })
					p.stopSrv()
					p.waitStopped(t)
				}
				if p.srv.Failed.Load() != 0 {
					t.Errorf("%d server sessions failed, want a clean end", p.srv.Failed.Load())
				}
				for _, path := range []string{cpath, spath} {
					out, st := replayString(t, path, capture.ReplayOptions{Key: key, Stream: -1, JSON: true})
					if st.Errors != 0 {
						text, _ := replayString(t, path, capture.ReplayOptions{Key: key, Stream: -1})
						var errs []string
						for _, l := range strings.Split(text, "\n") {
							if strings.Contains(l, "ERROR") {
								errs = append(errs, l)
							}
						}
						t.Errorf("%s: %d errors:\n%s", filepath.Base(path), st.Errors, strings.Join(errs, "\n"))
					}
					closes := map[string]int{}
					for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
						var r struct{ Dir, Kind, Type string }
						if err := json.Unmarshal([]byte(l), &r); err != nil {
							t.Fatalf("bad JSON line %q: %v", l, err)
						}
						if r.Kind == "frame" && r.Type == "CLOSE" {
							closes[r.Dir]++
						}
					}
					if closes["out"] != 1 || closes["in"] != 1 {
						t.Errorf("%s: CLOSE frames out %d, in %d; want one each way", filepath.Base(path), closes["out"], closes["in"])
					}
				}
			})
		}
	}
}
