package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"usocks/runner/capture"
)

// update regenerates testdata/captures (the captures and their goldens).
var update = flag.Bool("update", false, "regenerate testdata/captures (captures and golden listings)")

// Fixed test keys of the committed captures (public: tests only).
const (
	captureTestKeyV2 = "dXNvY2tzIGNhcHR1cmUgdGVzdCBrZXkgKHB1YmxpYyk=" // "usocks capture test key (public)"
	captureTestKeyV1 = "usocks v1 capture test key (public)"
)

const capturesDir = "../testdata/captures"

// captureOpts configures a tunnel whose ends capture.
type captureOpts struct {
	protocol        string
	key             string
	targetPort      int
	relay           bool
	clientCapture   string
	clientPlaintext bool
	serverCapture   string
	serverPlaintext bool
}

// startCaptureTunnel is startTunnel with capture settings.
func startCaptureTunnel(t testing.TB, o captureOpts) *tunnel {
	t.Helper()
	return startTunnel(t, tunnelOpts{protocol: o.protocol, key: o.key, targetPort: o.targetPort, relay: o.relay,
		probe: 500 * time.Millisecond, clientCapture: o.clientCapture, clientPlaintext: o.clientPlaintext,
		serverCapture: o.serverCapture, serverPlaintext: o.serverPlaintext})
}

// serveTargetOn starts the test target on a fixed port (after a test used
// the port to get a refused connection).
func serveTargetOn(t testing.TB, port int) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:"+portString(port))
	if err != nil {
		t.Skipf("port reuse: %v", err)
	}
	return serveTarget(t, ln)
}

func freePort(t testing.TB) int {
	ln := listenLocal(t)
	p := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return p
}

// runCaptureScenario drives the committed captures' session: a stream to
// a refused target (reset), several concurrent streams, a half-close, a
// tampered record (the session fails), a reconnect and a clean close.
func runCaptureScenario(t *testing.T, protocol, key string, files captureOpts) {
	port := freePort(t)
	files.protocol, files.key, files.targetPort, files.relay = protocol, key, port, true
	tn := startCaptureTunnel(t, files)
	tn.waitSession()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// 1. Nothing listens on the target port: the stream is reset.
	c := tn.dial(modeEcho)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.Copy(io.Discard, c); n != 0 || err == nil {
		t.Fatalf("refused target: %d bytes, %v; want a reset", n, err)
	}
	c.Close()
	serveTargetOn(t, port)

	// 2. Several streams at once.
	g, gctx := errgroup.WithContext(ctx)
	for i := 0; i < 3; i++ {
		g.Go(func() error { return echoThrough(gctx, tn, 1000+500*i, uint64(i)) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}

	// 3. Half-close: the target answers after our FIN.
	h := tn.dial(modeHash)
	payload := make([]byte, 2000)
	Pattern(payload, 42)
	if _, err := h.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := h.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = h.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(h)
	h.Close()
	want := sha256.Sum256(payload)
	if err != nil || !bytes.Equal(got, want[:]) {
		t.Fatalf("half-close: got %x, %v", got, err)
	}

	// 4. A bit flipped in the client's next record: the server's session
	// fails there.
	sent := len(tn.relay.first(0))
	tn.relay.setFlip(int64(sent + 100))
	q := tn.dial(modeSilent)
	_, _ = q.Write(make([]byte, 3000))
	waitFor(t, "the tampered session to fail", 10*time.Second, func() bool { return tn.srv.Failed.Load() >= 1 })
	tn.relay.setFlip(-1)
	_ = q.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, q)
	q.Close()

	// 5. The client reconnects; one more stream; then a clean close.
	tn.waitSession()
	if err := echoThrough(ctx, tn, 500, 7); err != nil {
		t.Fatal(err)
	}
	tn.cancel()
	<-tn.done
}

// TestGenerateCaptures regenerates the committed captures (-update only).
func TestGenerateCaptures(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate testdata/captures")
	}
	if err := os.MkdirAll(capturesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Run("v2", func(t *testing.T) {
		runCaptureScenario(t, "v2", captureTestKeyV2, captureOpts{
			clientCapture: filepath.Join(capturesDir, "v2-ciphertext.capture"),
			serverCapture: filepath.Join(capturesDir, "v2-plaintext.capture"), serverPlaintext: true,
		})
	})
	t.Run("v1", func(t *testing.T) {
		runCaptureScenario(t, "v1", captureTestKeyV1, captureOpts{
			serverCapture: filepath.Join(capturesDir, "v1.capture"),
		})
	})
	for _, name := range []string{"v2-ciphertext.capture", "v2-plaintext.capture", "v1.capture"} {
		// Committed files are world-readable; captures are made 0600.
		_ = os.Chmod(filepath.Join(capturesDir, name), 0o644)
	}
}

// replayString replays a file into a string.
func replayString(t testing.TB, path string, o capture.ReplayOptions) (string, capture.ReplayStats) {
	t.Helper()
	var out strings.Builder
	raw, err := os.ReadFile(path)
	if err == nil {
		var st capture.ReplayStats
		if st, err = capture.Replay(bytes.NewReader(raw), &out, o); err == nil {
			return out.String(), st
		}
	}
	t.Fatalf("replay %s: %v", path, err)
	return "", capture.ReplayStats{}
}

// TestCaptureEndToEnd captures both ends of a short v2 session (client
// plaintext, server ciphertext), checks what each file may and may not
// hold, and replays both through the decode stages.
func TestCaptureEndToEnd(t *testing.T) {
	for _, proto := range []string{"v2", "v1"} {
		t.Run(proto, func(t *testing.T) {
			dir := t.TempDir()
			cpath, spath := filepath.Join(dir, "client.capture"), filepath.Join(dir, "server.capture")
			key := newKey(t)
			if proto == "v1" {
				key = "v1 capture end-to-end key"
			}
			tg := startTarget(t)
			tn := startCaptureTunnel(t, captureOpts{protocol: proto, key: key, targetPort: tg.port(),
				clientCapture: cpath, clientPlaintext: true, serverCapture: spath})
			tn.waitSession()
			payload := make([]byte, 5000)
			Pattern(payload, 5)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := echoThrough(ctx, tn, len(payload), 5); err != nil {
				t.Fatal(err)
			}
			tn.cancel()
			<-tn.done

			sraw, err := os.ReadFile(spath)
			if err != nil {
				t.Fatal(err)
			}
			craw, err := os.ReadFile(cpath)
			if err != nil {
				t.Fatal(err)
			}
			if fi, _ := os.Stat(spath); fi.Mode().Perm() != 0o600 {
				t.Errorf("capture file mode %v, want 0600", fi.Mode().Perm())
			}
			if !bytes.HasPrefix(sraw, []byte("usocks-capture 1 protocol="+proto+" role=server plaintext=false ")) {
				t.Fatalf("server capture header: %q", firstLine(sraw))
			}
			if !bytes.HasPrefix(craw, []byte("usocks-capture 1 protocol="+proto+" role=client plaintext=true ")) {
				t.Fatalf("client capture header: %q", firstLine(craw))
			}
			// A ciphertext capture holds no key and no payload byte.
			probe := hex.EncodeToString(payload[100:116])
			if bytes.Contains(sraw, []byte(" keys ")) || bytes.Contains(sraw, []byte(" data=")) || bytes.Contains(sraw, []byte(probe)) {
				t.Fatal("ciphertext capture holds a key or plaintext")
			}
			if !bytes.Contains(craw, []byte(probe)) {
				t.Error("plaintext capture lacks the payload")
			}
			if proto == "v2" && !bytes.Contains(craw, []byte(" keys cipher=")) {
				t.Error("v2 plaintext capture lacks the session keys")
			}
			for _, raw := range [][]byte{sraw, craw} {
				if !bytes.Contains(raw, []byte(" 0 - close events=")) || !bytes.Contains(raw, []byte(" - end result=clean")) {
					t.Errorf("capture lacks its clean end or trailer:\n%s", lastBytes(raw, 2000))
				}
			}

			// Replays: no errors; decoded records agree with the frames the
			// stages tapped.
			okey := key
			for _, path := range []string{cpath, spath} {
				out, st := replayString(t, path, capture.ReplayOptions{Key: okey, Stream: -1, JSON: true})
				if st.Errors != 0 {
					text, _ := replayString(t, path, capture.ReplayOptions{Key: okey, Stream: -1})
					t.Errorf("%s: %d errors:\n%s", filepath.Base(path), st.Errors, text)
				}
				recs, frames := jsonSeq(t, out, "record"), jsonSeq(t, out, "frame")
				decodes := proto == "v1" || path == cpath
				if decodes {
					if len(recs) == 0 || strings.Join(recs, "\n") != strings.Join(frames, "\n") {
						t.Errorf("%s: decoded records differ from tapped frames:\nrecords:\n%s\nframes:\n%s", filepath.Base(path), strings.Join(recs, "\n"), strings.Join(frames, "\n"))
					}
				} else if len(recs) != 0 {
					t.Errorf("%s: records decoded from a v2 ciphertext capture", filepath.Base(path))
				}
			}
		})
	}
}

func firstLine(b []byte) string { l, _, _ := bytes.Cut(b, []byte("\n")); return string(l) }

func lastBytes(b []byte, n int) string { return string(b[max(0, len(b)-n):]) }

// jsonSeq lists "dir type stream flags len" of every line of one kind,
// the in direction first.
func jsonSeq(t testing.TB, out, kind string) []string {
	var seq, outSeq []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct {
			Dir, Kind, Type, Flags string
			Stream, Len            *int
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("bad JSON line %q: %v", l, err)
		}
		if r.Kind != kind || r.Type == "PAD" {
			continue
		}
		s := r.Dir + " " + r.Type + " " + r.Flags
		if r.Stream != nil {
			s += " " + portString(*r.Stream)
		}
		if r.Len != nil {
			s += " " + portString(*r.Len)
		}
		if r.Dir == "out" {
			outSeq = append(outSeq, s)
		} else {
			seq = append(seq, s)
		}
	}
	return append(seq, outSeq...)
}

// Benchmarks: the same in-process tunnel (client, server, echo target on
// loopback) moving 1 MiB per iteration through one stream, with capture
// off (nil taps) and on at both ends.
func benchSession(b *testing.B, capture, plaintext bool) {
	tg := startTarget(b)
	o := captureOpts{protocol: "v2", key: newKey(b), targetPort: tg.port()}
	if capture {
		dir := b.TempDir()
		o.clientCapture, o.serverCapture = filepath.Join(dir, "c.capture"), filepath.Join(dir, "s.capture")
		o.clientPlaintext, o.serverPlaintext = plaintext, plaintext
	}
	tn := startCaptureTunnel(b, o)
	tn.waitSession()
	ctx := context.Background()
	const n = 1 << 20
	if err := echoThrough(ctx, tn, n, 1); err != nil { // warm up
		b.Fatal(err)
	}
	b.SetBytes(2 * n) // each way
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := echoThrough(ctx, tn, n, uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if capture {
		tn.cancel()
		<-tn.done
		// Events the bounded queues dropped rather than slow the tunnel.
		b.ReportMetric(float64(tn.cli.capture.Dropped()+tn.srv.capture.Dropped())/float64(b.N), "drops/op")
	}
}

func BenchmarkSessionNoCapture(b *testing.B)        { benchSession(b, false, false) }
func BenchmarkSessionCapture(b *testing.B)          { benchSession(b, true, false) }
func BenchmarkSessionCapturePlaintext(b *testing.B) { benchSession(b, true, true) }

// TestAnalyzeDefence: `usocks analyze` of a client capture counts exactly
// the app's bytes as payload, and the defence's dummies: as many PAD
// records in as the client's decrypt stage verified, and PAD records out
// once the client has sent some; none with `defense: off`.
func TestAnalyzeDefence(t *testing.T) {
	const n = 20000
	for _, policy := range []string{"off", "standard"} {
		t.Run(policy, func(t *testing.T) {
			tg := startTarget(t)
			path := filepath.Join(t.TempDir(), "client.capture")
			tn := startTunnel(t, tunnelOpts{protocol: "v2", key: newKey(t), targetPort: tg.port(), defense: policy, clientCapture: path})
			tn.waitSession()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := echoThrough(ctx, tn, n, 3); err != nil {
				t.Fatal(err)
			}
			cli := &tn.cli.Stats
			if policy != "off" {
				// The episode closes after its idle time; then the tails go out.
				waitFor(t, "dummies both ways", 20*time.Second, func() bool {
					return cli.DefenceDummy.Load() > 0 && cli.ChaffReceived.Load() > 0
				})
			}
			tn.cancel()
			<-tn.done
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			a, err := capture.Analyze(f, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			// The mode byte, then n bytes each way.
			if a.Out.PayloadBytes != n+1 || a.In.PayloadBytes != n || a.Dropped != 0 {
				t.Fatalf("payload out %d in %d (dropped %d), want %d and %d", a.Out.PayloadBytes, a.In.PayloadBytes, a.Dropped, n+1, n)
			}
			if a.Out.WireBytes <= a.Out.PayloadBytes || a.In.WireBytes <= a.In.PayloadBytes || a.Out.Packets < n/capture.DefaultMSS {
				t.Fatalf("wire out %d in %d, %d packets out", a.Out.WireBytes, a.In.WireBytes, a.Out.Packets)
			}
			if a.In.PadRecords != cli.ChaffReceived.Load() {
				t.Errorf("%d PAD records in, the client verified %d", a.In.PadRecords, cli.ChaffReceived.Load())
			}
			if sent := cli.DefenceDummy.Load(); (sent > 0) != (a.Out.PadRecords > 0) || (policy == "off") != (sent == 0) {
				t.Errorf("%d PAD records out, the client's defence sent %d dummy bytes", a.Out.PadRecords, sent)
			}
		})
	}
}
