package runner

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// Resumable sessions end to end (SPEC-v2.md §7b): a relay between client
// and server cuts the backend; streams must go on byte for byte.

// sourceSum is the SHA-256 of the first n bytes that modeSource sends.
func sourceSum(n int64) [32]byte {
	buf := make([]byte, 64*1024)
	Pattern(buf, 7)
	h := sha256.New()
	for n > 0 {
		k := min(n, int64(len(buf)))
		h.Write(buf[:k])
		n -= k
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// download reads n bytes from modeSource through the tunnel and checks
// their SHA-256; onProgress is called with the bytes read so far after
// every read.
func download(ctx context.Context, tn *tunnel, n int64, onProgress func(int64)) error {
	c, err := net.DialTimeout("tcp", tn.cli.Addr().String(), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	req := []byte{modeSource, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint64(req[1:], uint64(n))
	if _, err := c.Write(req); err != nil {
		return err
	}
	h := sha256.New()
	buf := make([]byte, 256*1024)
	var got int64
	for {
		k, err := c.Read(buf)
		h.Write(buf[:k])
		got += int64(k)
		if k > 0 && onProgress != nil {
			onProgress(got)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read after %d bytes: %w", got, err)
		}
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if got != n || sum != sourceSum(n) {
		return fmt.Errorf("download: got %d bytes (want %d), sha256 match %v", got, n, sum == sourceSum(n))
	}
	return nil
}

// cutter cuts the relay's connections at given progress marks, once each.
type cutter struct {
	tn    *tunnel
	marks []int64
	next  atomic.Int64
	cuts  atomic.Int64
}

func (c *cutter) progress(n int64) {
	i := c.next.Load()
	if int(i) < len(c.marks) && n >= c.marks[i] && c.next.CompareAndSwap(i, i+1) {
		c.tn.relay.cut()
		c.cuts.Add(1)
	}
}

func resumeTunnel(t *testing.T, backend string, edit ...func(*tunnelOpts)) *tunnel {
	tg := startTarget(t)
	o := tunnelOpts{targetPort: tg.port(), relay: true, backend: backend, resume: 30 * time.Second}
	for _, e := range edit {
		e(&o)
	}
	tn := startTunnel(t, o)
	tn.waitSession()
	return tn
}

func TestResumeDownloadCut(t *testing.T) {
	for _, backend := range []string{"plain_tcp", "tls"} {
		t.Run(backend, func(t *testing.T) {
			tn := resumeTunnel(t, backend)
			const n = 8 << 20
			cut := &cutter{tn: tn, marks: []int64{1 << 10, 100 << 10, 3 << 20, 6 << 20}}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := download(ctx, tn, n, cut.progress); err != nil {
				t.Fatal(err)
			}
			if cut.cuts.Load() != 4 {
				t.Fatalf("cuts = %d, want 4", cut.cuts.Load())
			}
			// The last cut may come when the rest of the download is
			// already in the client's stream buffers: the download then
			// ends before that resumption does.
			waitFor(t, "the fourth resumption", 30*time.Second, func() bool { return tn.cli.Resumes.Load() >= 4 })
			if got := tn.srv.Sessions.Load(); got != 5 {
				t.Errorf("server handshakes = %d, want 5 (one session, four resumptions)", got)
			}
			if got := tn.srv.Failed.Load(); got != 0 {
				t.Errorf("server sessions failed: %d", got)
			}
			// New streams run on the resumed session too.
			if err := echoThrough(ctx, tn, 100_000, 3); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The bar: a 64 MiB download and 50 concurrent 2 MiB echoes
// through 5 backend cuts, every byte checked.
func TestResumeBar(t *testing.T) {
	tn := resumeTunnel(t, "plain_tcp")
	size, echoes, echoSize := int64(64<<20), 50, 2<<20
	if testing.Short() {
		size, echoes, echoSize = 8<<20, 10, 256<<10
	}
	marks := make([]int64, 5)
	for i := range marks {
		marks[i] = size * int64(i+1) / 7
	}
	cut := &cutter{tn: tn, marks: marks}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return download(gctx, tn, size, cut.progress) })
	for i := range echoes {
		g.Go(func() error { return echoThrough(gctx, tn, echoSize, uint64(100+i)) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if cut.cuts.Load() != 5 {
		t.Fatalf("cuts = %d, want 5", cut.cuts.Load())
	}
	if got := tn.srv.Failed.Load(); got != 0 {
		t.Errorf("server sessions failed: %d", got)
	}
	t.Logf("resumptions: %d, server handshakes: %d", tn.cli.Resumes.Load(), tn.srv.Sessions.Load())
}

// A cut while the resumption handshake itself is under way: the server
// answers (and claims the session), the client never sees it; the next
// attempt resumes.
func TestResumeCutDuringHandshake(t *testing.T) {
	tn := resumeTunnel(t, "plain_tcp")
	const n = 4 << 20
	cut := &cutter{tn: tn, marks: []int64{1 << 20}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tn.relay.dropReply(2)
	if err := download(ctx, tn, n, cut.progress); err != nil {
		t.Fatal(err)
	}
	if got := tn.relay.accepted(); got < 4 {
		t.Errorf("relay saw %d connections, want at least 4 (first, two cut replies, the resumption)", got)
	}
	if got := tn.srv.Failed.Load(); got != 0 {
		t.Errorf("server sessions failed: %d", got)
	}
	if got := tn.cli.Resumes.Load(); got != 1 {
		t.Errorf("resumptions = %d, want 1", got)
	}
}

// A resumption's first flight replayed by an attacker opens nothing: the
// salt store refuses it before the session is even looked up.
func TestResumeReplayOpensNothing(t *testing.T) {
	tn := resumeTunnel(t, "plain_tcp")
	downloadThroughOneCut(t, tn)
	flight := tn.relay.first(1) // the resuming connection's bytes
	if len(flight) < 108 {
		t.Fatalf("recorded flight of %d bytes", len(flight))
	}
	resumed, sessions := tn.srv.resumes.Resumed.Load(), tn.srv.Sessions.Load()
	r, _ := probe(tn.serverAddr(), flight, 3*time.Second)
	if r.bytesBack != 0 || r.how != "FIN" {
		t.Fatalf("replayed resumption: %+v; want silence, then FIN", r)
	}
	if tn.srv.resumes.Resumed.Load() != resumed || tn.srv.Sessions.Load() != sessions {
		t.Fatal("a replayed resumption flight reached the session")
	}
	// The real session is untouched.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := echoThrough(ctx, tn, 100_000, 5); err != nil {
		t.Fatal(err)
	}
}

// A session whose client does not come back within the server's
// resume_timeout expires: its streams are reset, and the client's next
// resumption gets "new session" and starts over.
func TestResumeDetachedSessionExpires(t *testing.T) {
	const timeout = 20 * time.Second
	fc := newFakeClock()
	tn := resumeTunnel(t, "plain_tcp", func(o *tunnelOpts) { o.srvResume, o.srvClock = timeout, fc })
	c := echoThenCut(t, tn)
	waitFor(t, "the session to wait detached", 10*time.Second, func() bool { return tn.srv.resumes.waiting() == 1 && fc.armed() == 1 })
	// It waits for the whole resume_timeout, not a moment less…
	fc.Advance(timeout - time.Nanosecond)
	if fc.armed() != 1 || tn.srv.resumes.Expired.Load() != 0 {
		t.Fatal("the detached session expired before resume_timeout")
	}
	// …and expires then.
	fc.Advance(time.Nanosecond)
	waitFor(t, "the detached session to expire", 10*time.Second, func() bool { return tn.srv.resumes.Expired.Load() == 1 })
	tn.relay.down.Store(false)
	// The client's stream is reset when the server answers "new".
	if n, err := io.Copy(io.Discard, c); err == nil || n != 0 {
		t.Fatalf("stream of an expired session: read %d bytes, err %v; want a reset", n, err)
	}
	tn.waitSession()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 100_000, 6); err != nil {
		t.Fatal(err)
	}
	if got := tn.srv.Stats.StreamsReset.Load(); got < 1 {
		t.Errorf("server reset %d streams, want the expired session's", got)
	}
}

// A record that fails authentication (a bit flipped on the way) loses
// the link, not the session: the client resumes with fresh keys.
func TestResumeAfterTamperedRecord(t *testing.T) {
	tn := resumeTunnel(t, "plain_tcp")
	tn.relay.mu.Lock()
	tn.relay.flipAt, tn.relay.flipOnce = 200_000, true
	tn.relay.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := echoThrough(ctx, tn, 1<<20, 8); err != nil {
		t.Fatal(err)
	}
	if tn.cli.Resumes.Load() != 1 {
		t.Errorf("resumptions = %d, want 1", tn.cli.Resumes.Load())
	}
	if tn.srv.Failed.Load() != 0 {
		t.Errorf("server sessions failed: %d", tn.srv.Failed.Load())
	}
}

// While a session waits for its client, the server's streams fill its
// resend buffer up to resume_buffer (plus at most one batch) and then
// wait; the download completes byte for byte once the client is back.
func TestResumeBufferBound(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true, resume: 30 * time.Second, resumeBuffer: 64})
	tn.waitSession()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cut := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		cutting := true
		done <- download(ctx, tn, 8<<20, func(n int64) {
			if n >= 1<<20 && cutting {
				tn.relay.down.Store(true)
				tn.relay.cut()
				close(cut)
				cutting = false
			}
		})
	}()
	select {
	case <-cut:
	case err := <-done:
		t.Fatalf("download ended before the cut: %v", err)
	}
	kept := func() int64 {
		r := tn.srv.resumes
		r.mu.Lock()
		defer r.mu.Unlock()
		var n int64
		for _, sl := range r.slots {
			n += sl.sess.resend.Kept()
		}
		return n
	}
	// One batch: at most 256 KiB of payload, in buffers of at most 5/4
	// of their payload (16 KiB in the 20 KiB class), and 64 bytes a frame.
	const limit, batch = 64 << 10, 320<<10 + 64*64
	waitFor(t, "the resend buffer to fill", 10*time.Second, func() bool { return kept() >= limit })
	if k := kept(); k > limit+batch {
		t.Fatalf("resend buffer keeps %d bytes, bound %d", k, limit+batch)
	} else {
		t.Logf("detached session keeps %d bytes (resume_buffer %d)", k, limit)
	}
	tn.relay.down.Store(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if tn.cli.Resumes.Load() != 1 {
		t.Errorf("resumptions = %d, want 1", tn.cli.Resumes.Load())
	}
}

// downloadThroughOneCut downloads 1 MiB (SHA-256 checked) through a cut
// of the backend at 256 KiB, which the session must survive with one
// resumption.
func downloadThroughOneCut(t *testing.T, tn *tunnel) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cut := &cutter{tn: tn, marks: []int64{256 << 10}}
	if err := download(ctx, tn, 1<<20, cut.progress); err != nil {
		t.Fatal(err)
	}
	if tn.cli.Resumes.Load() != 1 {
		t.Fatalf("resumptions = %d, want 1", tn.cli.Resumes.Load())
	}
}

// echoThenCut opens an echo stream, checks one round trip on it, then
// takes the relay down and cuts every backend connection: the stream's
// session loses its backend and cannot reach the server again until the
// caller brings the relay back up. The stream is closed with the test.
func echoThenCut(t *testing.T, tn *tunnel) net.Conn {
	t.Helper()
	c := tn.dial(modeEcho)
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo before the cut: %q %v", buf, err)
	}
	tn.relay.down.Store(true)
	tn.relay.cut()
	return c
}
