package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"usocks/stages"
)

// echoThrough sends n checked bytes through the tunnel on one stream.
func echoThrough(ctx context.Context, tn *tunnel, n int, seed uint64) error {
	c, err := net.DialTimeout("tcp", tn.cli.Addr().String(), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte{modeEcho}); err != nil {
		return err
	}
	_, err = EchoCheck(ctx, c, n, seed)
	return err
}

// echoMany echoes size checked bytes on each of streams concurrent streams.
func echoMany(t *testing.T, tn *tunnel, streams, size int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	for i := 0; i < streams; i++ {
		g.Go(func() error { return echoThrough(gctx, tn, size, uint64(i)) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestManyConcurrentStreams(t *testing.T) {
	overBackends(t, func(t *testing.T, o tunnelOpts) {
		streams, size := 50, 2<<20
		if o.backend != "" { // the bulk runs on plain_tcp; others carry fewer bytes
			size = 512 << 10
		}
		manyStreams(t, o, streams, size)
	})
}

// manyStreams echoes size checked bytes on each of streams concurrent
// streams of one tunnel: one session, no stream reset.
func manyStreams(t *testing.T, o tunnelOpts, streams, size int) {
	tn, _ := startWithTarget(t, o)
	if testing.Short() {
		streams, size = 20, 256<<10
	}
	echoMany(t, tn, streams, size)
	if got := tn.srv.Sessions.Load(); got != 1 {
		t.Errorf("sessions = %d, want 1 (all streams share one tunnel)", got)
	}
	waitFor(t, "streams to finish", 5*time.Second, func() bool {
		return tn.srv.Stats.StreamsOpened.Load() == int64(streams)
	})
	if r := tn.srv.Stats.StreamsReset.Load(); r != 0 {
		t.Errorf("%d streams reset, want 0", r)
	}
}

func TestHalfClose(t *testing.T) {
	overBackends(t, func(t *testing.T, o tunnelOpts) {
		tn, _ := startWithTarget(t, o)
		halfClose(t, tn, 300_000)
	})
}

// halfClose sends n bytes, half-closes, and checks the digest the target
// sends only after it saw the FIN: the stream must stay open the other way.
func halfClose(t *testing.T, tn *tunnel, n int) {
	t.Helper()
	c := tn.dial(modeHash)
	defer c.Close()
	payload := make([]byte, n)
	Pattern(payload, 3)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read after half-close: %v", err)
	}
	want := sha256.Sum256(payload)
	if !bytes.Equal(got, want[:]) {
		t.Fatalf("got %x, want digest %x", got, want)
	}
}

// TestStalledReaderDoesNotStallOthers: per backend kind, a stream whose
// app does not read fills its window and stops there, while busy streams
// beside it go on; once read, it delivers every byte.
func TestStalledReaderDoesNotStallOthers(t *testing.T) {
	overBackends(t, stalledReader)
}

func stalledReader(t *testing.T, o tunnelOpts) {
	const size = 16 << 20 // far above the largest window (2 MiB)
	tn, tg := startWithTarget(t, o)
	// A stream whose app never reads while the target sends size bytes.
	stalled := tn.dial(modeSource)
	defer stalled.Close()
	var nb [8]byte
	binary.BigEndian.PutUint64(nb[:], size)
	if _, err := stalled.Write(nb[:]); err != nil {
		t.Fatal(err)
	}
	// The stalled stream is flowing (and soon fills its window) before the
	// busy streams start.
	waitFor(t, "the stalled stream to carry data", 10*time.Second, func() bool { return tg.sent.Load() >= 1<<20 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 4; i++ {
		if err := echoThrough(ctx, tn, 4<<20, uint64(100+i)); err != nil {
			t.Fatalf("busy stream %d beside a stalled one: %v", i, err)
		}
	}
	// The stalled stream still works once its app reads: nothing was lost.
	_ = stalled.SetReadDeadline(time.Now().Add(time.Minute))
	h := sha256.New()
	n, err := io.Copy(h, stalled)
	if err != nil {
		t.Fatalf("stalled stream: %v after %d bytes", err, n)
	}
	if want := sourceDigest(size); n != size || !bytes.Equal(h.Sum(nil), want) {
		t.Fatalf("stalled stream delivered %d bytes, digest mismatch=%v", n, !bytes.Equal(h.Sum(nil), want))
	}
}

func TestRefusedTargetResetsOnlyThatStream(t *testing.T) {
	overBackends(t, refusedTargetResets)
}

// refusedTargetResets: a stream whose target refuses is reset, and the
// tunnel carries new streams once the target is up.
func refusedTargetResets(t *testing.T, o tunnelOpts) {
	// A port with nothing listening.
	ln := listenLocal(t)
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	o.targetPort = port
	tn := startTunnel(t, o)
	tn.waitSession()
	tn.expectReset("refused target")
	// The same tunnel still carries new streams once the target is up.
	serveTargetOn(t, port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 100_000, 1); err != nil {
		t.Fatal(err)
	}
	if s := tn.srv.Sessions.Load(); s != 1 {
		t.Fatalf("sessions = %d, want 1: a refused dial must not end the tunnel", s)
	}
}

func TestWrongKeyIsRejected(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), clientKey: newKey(t)})
	waitFor(t, "a rejected handshake", 10*time.Second, func() bool { return tn.srv.Rejected.Load() >= 1 })
	if s := tn.srv.Sessions.Load(); s != 0 {
		t.Fatalf("wrong key got %d sessions", s)
	}
	if a := tg.accepted.Load(); a != 0 {
		t.Fatalf("target saw %d connections", a)
	}
	// The client cannot tell a wrong key from a server that does not
	// answer; after a few handshakes in a row it says so, once, with its
	// key's fingerprint.
	const msg = "no valid reply from the server to several handshakes in a row"
	count := func() (n int, key any) {
		for _, e := range tn.hook.AllEntries() {
			if e.Level == logrus.ErrorLevel && strings.HasPrefix(e.Message, msg) {
				n, key = n+1, e.Data["key"]
			}
		}
		return n, key
	}
	waitFor(t, "the wrong-key error", 20*time.Second, func() bool { n, _ := count(); return n > 0 })
	waitFor(t, "two more failed handshakes", 20*time.Second, func() bool { return tn.cli.Reconnects.Load() >= authFailLimit+2 })
	n, key := count()
	psk, err := tn.cli.cfg().PSK("client")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || key != KeyFingerprint(psk) {
		t.Errorf("%d wrong-key errors with key %v, want one with %s", n, key, KeyFingerprint(psk))
	}
}

// probeReaction is what a prober can observe of the server.
type probeReaction struct {
	bytesBack int
	how       string // "FIN", "RST", "open"
}

func probe(addr string, payload []byte, wait time.Duration) (probeReaction, time.Duration) {
	start := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return probeReaction{how: "dial:" + err.Error()}, 0
	}
	defer c.Close()
	_, _ = c.Write(payload)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	var r probeReaction
	for {
		n, err := c.Read(buf)
		r.bytesBack += n
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				r.how = "FIN"
			case errors.Is(err, syscall.ECONNRESET):
				r.how = "RST"
			case errors.Is(err, os.ErrDeadlineExceeded):
				r.how = "open"
			default:
				r.how = err.Error()
			}
			return r, time.Since(start)
		}
	}
}

// TestProberOneReaction sends the prober's set of probes, each on a fresh
// connection: random bytes of many lengths, a replayed first flight, a
// first flight with one flipped bit, a v1-looking stream. Every one must
// get the same reaction: nothing back, FIN at the fixed deadline.
func TestProberOneReaction(t *testing.T) {
	tg := startTarget(t)
	probeTimeout := 700 * time.Millisecond
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true, probe: probeTimeout})
	tn.waitSession()
	if err := echoThrough(context.Background(), tn, 1000, 1); err != nil {
		t.Fatal(err)
	}
	flight := tn.relay.first(0)
	if len(flight) < 108 {
		t.Fatalf("recorded first flight too short: %d", len(flight))
	}
	var probes [][]byte
	var names []string
	for _, n := range append(seq(1, 64), 100, 221, 500, 1000, 2000, 5000) {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		probes = append(probes, b)
		names = append(names, "random/"+portString(n))
	}
	probes = append(probes, flight) // replay of the whole client stream
	names = append(names, "replay")
	for _, off := range []int{0, 40, 70, len(flight) / 2} {
		m := append([]byte(nil), flight...)
		m[off] ^= 0x80
		probes = append(probes, m)
		names = append(names, "mutated-replay/"+portString(off))
	}
	// v1 bytes (a sync block plus one block) at a v2 listener.
	v1 := make([]byte, 32)
	_, _ = rand.Read(v1)
	probes = append(probes, v1)
	names = append(names, "v1")

	type result struct {
		r  probeReaction
		el time.Duration
	}
	results := make([]result, len(probes))
	var wg sync.WaitGroup
	for i := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, el := probe(tn.serverAddr(), probes[i], probeTimeout+3*time.Second)
			results[i] = result{r, el}
		}()
	}
	wg.Wait()
	for i, res := range results {
		if res.r.bytesBack != 0 || res.r.how != "FIN" {
			t.Errorf("probe %s: %d bytes back, %s; want 0 bytes and FIN", names[i], res.r.bytesBack, res.r.how)
		}
		if res.el < probeTimeout-50*time.Millisecond || res.el > probeTimeout+2*time.Second {
			t.Errorf("probe %s: closed after %v, want the fixed %v", names[i], res.el, probeTimeout)
		}
	}
	if a := tg.accepted.Load(); a != 1 {
		t.Errorf("target saw %d connections, want only the legitimate one", a)
	}
	if got := tn.srv.Sessions.Load(); got != 1 {
		t.Errorf("sessions = %d, want 1 (replays must not open sessions)", got)
	}
}

func seq(a, b int) []int {
	var s []int
	for i := a; i <= b; i++ {
		s = append(s, i)
	}
	return s
}

func TestReplayRejectedAfterRestartAndSkew(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true, probe: 300 * time.Millisecond})
	tn.waitSession()
	flight := tn.relay.first(0)
	// A "restarted" server: same key and port settings, fresh salt cache,
	// started after the flight — its start is a second on (timestamps are
	// whole seconds), so the recorded flight's timestamp is before it.
	logger, _ := testLogger(t)
	cfg := *tn.srvCfg
	srv2, err := NewServer(&cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv2.Handshake().Salts = stages.NewLocalSaltStore(cfg.ReplayWindow, cfg.SaltCache, 0, time.Now().Add(time.Second))
	ln := listenLocal(t)
	srv2.UseListener(ln)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv2.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	r, _ := probe(ln.Addr().String(), flight, 3*time.Second)
	if r.bytesBack != 0 || r.how != "FIN" || srv2.Sessions.Load() != 0 {
		t.Fatalf("replay after restart: %+v, sessions %d", r, srv2.Sessions.Load())
	}
	// Clock skew: a server whose clock is 31 s ahead refuses a fresh flight.
	tn.srv.Handshake().Now = func() time.Time { return time.Now().Add(31 * time.Second) }
	c, err := net.Dial("tcp", tn.serverAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := tn.srv.Rejected.Load()
	tn.relay.cut() // forces the client to reconnect with a fresh flight
	waitFor(t, "skewed handshake rejected", 10*time.Second, func() bool { return tn.srv.Rejected.Load() > before })
}

func TestTamperedRecordEndsSession(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true})
	tn.waitSession()
	// Flip a bit well past the handshake, inside the data we send.
	tn.relay.setFlip(5000)
	c := tn.dial(modeSilent)
	defer c.Close()
	junk := make([]byte, 20000)
	_, _ = c.Write(junk)
	waitFor(t, "server session to fail", 10*time.Second, func() bool { return tn.srv.Failed.Load() >= 1 })
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err == nil {
		t.Fatal("app saw a clean EOF after its tunnel was tampered with; want a reset")
	}
	var warned bool
	for _, e := range tn.hook.AllEntries() {
		if e.Message == "session ended" && e.Data["peer"] != nil {
			warned = true
		}
	}
	if !warned {
		t.Error("no warning with the peer address for the tampered session")
	}
}

func TestTruncationResetsStreams(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true})
	tn.waitSession()
	c := tn.dial(modeEcho)
	defer c.Close()
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	tn.relay.cut()
	if _, err := io.Copy(io.Discard, c); err == nil {
		t.Fatal("stream ended with a clean EOF after the backend was cut; want an error")
	}
	// The client reconnects and new streams work.
	tn.waitSession()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 50_000, 9); err != nil {
		t.Fatal(err)
	}
}

// TestGracefulShutdownIsSecureClose: per backend kind, stopping the client
// ends the session with CLOSE both ways: the server counts a clean end.
func TestGracefulShutdownIsSecureClose(t *testing.T) {
	overBackends(t, gracefulShutdown)
}

func gracefulShutdown(t *testing.T, o tunnelOpts) {
	tn, _ := startWithTarget(t, o)
	if err := echoThrough(context.Background(), tn, 10_000, 1); err != nil {
		t.Fatal(err)
	}
	tn.cancel()
	<-tn.done
	if tn.srv.Clean.Load() != 1 || tn.srv.Failed.Load() != 0 {
		t.Fatalf("clean=%d failed=%d; want the session closed cleanly", tn.srv.Clean.Load(), tn.srv.Failed.Load())
	}
	// Each side ended on the peer's CLOSE and end of input, not because
	// the grace time ran out (a cut is counted before the session ends).
	if c, s := tn.cli.Stats.GraceCuts.Load(), tn.srv.Stats.GraceCuts.Load(); c != 0 || s != 0 {
		t.Fatalf("sessions cut by the grace time: client %d, server %d; want none", c, s)
	}
}

func TestStreamLimit(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), maxStreams: 2})
	tn.waitSession()
	a, b := tn.dial(modeEcho), tn.dial(modeEcho)
	defer a.Close()
	defer b.Close()
	waitFor(t, "two streams", 5*time.Second, func() bool { return tg.accepted.Load() == 2 })
	tn.expectReset("third stream over a limit of 2")
	// The first two still work.
	if _, err := a.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(a, got); err != nil || string(got) != "ping" {
		t.Fatalf("stream under the limit: %q %v", got, err)
	}
}

func TestHalfClosedStreamTimesOut(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), halfClosed: 300 * time.Millisecond})
	tn.waitSession()
	c := tn.dial(modeHold)
	defer c.Close()
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The target never answers nor closes: the half-closed stream is reset
	// once it has been idle for the timeout.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	n, err := io.Copy(io.Discard, c)
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("half-closed idle stream: %d bytes, err %v after %v; want a reset", n, err, time.Since(start))
	}
	// An active stream is not touched by the same timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 1<<20, 5); err != nil {
		t.Fatal(err)
	}
}

func TestBlackholedBackendIsDetected(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true, keepalive: 200 * time.Millisecond})
	tn.waitSession()
	c := tn.dial(modeEcho)
	defer c.Close()
	if _, err := c.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	// The network silently stops: no FIN, no RST, nothing.
	tn.relay.blackhole.Store(true)
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, c); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stream over a dead backend: %v after %v; want a reset", err, time.Since(start))
	}
	t.Logf("stream reset %v after the backend went silent", time.Since(start).Round(time.Millisecond))
	// Once the network is back, new streams work.
	tn.relay.blackhole.Store(false)
	tn.waitSession()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 10_000, 3); err != nil {
		t.Fatal(err)
	}
}

// TestRekeyingIsSeamless moves data, per backend kind, with a key lifetime
// of 1,000 records: both directions rekey in band repeatedly and every
// byte arrives.
func TestRekeyingIsSeamless(t *testing.T) {
	overBackends(t, rekeying)
}

func rekeying(t *testing.T, o tunnelOpts) {
	o.rekeyAfter = 1000
	tn, _ := startWithTarget(t, o)
	echoMany(t, tn, 4, 8<<20)
	cr, sr := tn.cli.Stats.Rekeys.Load(), tn.srv.Stats.Rekeys.Load()
	t.Logf("rekeys: client %d, server %d", cr, sr)
	if cr < 2 || sr < 2 { // 32 MiB each way is at least 2,048 records of 16 KiB
		t.Fatalf("rekeys: client %d, server %d; want at least 2 each way", cr, sr)
	}
	if tn.srv.Sessions.Load() != 1 || tn.srv.Failed.Load() != 0 {
		t.Fatal("rekeying must not end the session")
	}
}

// TestOneBadClientDoesNotDisturbAnother: two clients share one server; one
// of them has its backend tampered with mid-transfer. Its session ends;
// the other's streams carry on untouched.
func TestOneBadClientDoesNotDisturbAnother(t *testing.T) {
	tg := startTarget(t)
	good := startTunnel(t, tunnelOpts{targetPort: tg.port()})
	good.waitSession()
	// A second client through a relay to the same server.
	logger, _ := testLogger(t)
	rl := startRelay(t, good.serverAddr())
	cln := listenLocal(t)
	bad, err := NewClient(&ClientConfig{Common: Common{Key: good.key, Backend: BackendConfig{Server: "127.0.0.1", Port: rl.port()}},
		Address: "127.0.0.1", Port: cln.Addr().(*net.TCPAddr).Port}, logger)
	if err != nil {
		t.Fatal(err)
	}
	bad.UseListener(cln)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = bad.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; rl.close() }()
	select {
	case <-bad.Sessions:
	case <-time.After(10 * time.Second):
		t.Fatal("second client has no session")
	}
	// A long transfer on the good client, while the bad one is tampered.
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		errc <- echoThrough(ctx, good, 16<<20, 21)
	}()
	rl.setFlip(20000)
	bc, err := net.Dial("tcp", cln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	_, _ = bc.Write(append([]byte{modeSilent}, make([]byte, 64<<10)...))
	waitFor(t, "the tampered session to fail", 10*time.Second, func() bool { return good.srv.Failed.Load() >= 1 })
	if err := <-errc; err != nil {
		t.Fatalf("the good client's stream suffered: %v", err)
	}
}

// TestBackendRotationLosesNothing: with a backend lifetime of ~300 ms the
// client rotates several times while a slow stream spans the rotations and
// new streams keep opening; every byte arrives and no stream is reset.
func TestBackendRotationLosesNothing(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), rotate: 300 * time.Millisecond})
	tn.waitSession()
	// The long stream: 40 chunks of 16 KiB, 50 ms apart, echoed.
	slow := tn.dial(modeEcho)
	defer slow.Close()
	sent := sha256.New()
	got := make(chan []byte, 1)
	go func() {
		h := sha256.New()
		_, _ = io.Copy(h, slow)
		got <- h.Sum(nil)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 40 || tn.cli.Rotations.Load() < 2; i++ {
		if ctx.Err() != nil {
			t.Fatalf("only %d rotations with a 300 ms lifetime", tn.cli.Rotations.Load())
		}
		chunk := make([]byte, 16<<10)
		Pattern(chunk, uint64(i))
		sent.Write(chunk)
		if _, err := slow.Write(chunk); err != nil {
			t.Fatalf("slow stream write %d: %v", i, err)
		}
		if i%8 == 0 { // new streams while rotating
			if err := echoThrough(ctx, tn, 64<<10, uint64(100+i)); err != nil {
				t.Fatalf("new stream during rotation: %v", err)
			}
		}
		time.Sleep(50 * time.Millisecond) // pacing: the stream spans rotations
	}
	_ = slow.CloseWrite()
	select {
	case sum := <-got:
		if !bytes.Equal(sum, sent.Sum(nil)) {
			t.Fatal("the stream that spanned rotations lost or changed bytes")
		}
	case <-ctx.Done():
		t.Fatal("slow stream did not finish")
	}
	if tn.srv.Stats.StreamsReset.Load() != 0 || tn.srv.Failed.Load() != 0 {
		t.Fatalf("resets %d, failed sessions %d: rotation must be clean", tn.srv.Stats.StreamsReset.Load(), tn.srv.Failed.Load())
	}
	t.Logf("%d rotations, %d backend sessions", tn.cli.Rotations.Load(), tn.srv.Sessions.Load())
}
