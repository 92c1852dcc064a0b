package runner

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"testing"
	"time"
)

// backendKinds are the v2 backends the end-to-end suite runs over. The
// whole suite (e2e_test.go) runs on plain_tcp; the tests that take a
// backend kind (bulk both ways, many streams, half-close, reset, stalled
// reader, graceful shutdown, rekeying, 1-byte fragments and stalls) run on
// each of these. multi_tcp runs its v2 form: one resumable session over
// four lanes (SPEC-v2.md §7d); its v1 form is tested by the v1 suite.
var backendKinds = []struct {
	name string
	opts tunnelOpts
}{
	{"plain_tcp", tunnelOpts{}},
	{"tls", tunnelOpts{backend: "tls"}},
	{"ws", tunnelOpts{backend: "ws", path: "/tunnel"}},
	{"wss", tunnelOpts{backend: "tls", path: "/tunnel"}},
	{"multi_tcp", tunnelOpts{backend: "multi_tcp", resume: 30 * time.Second}},
}

// overBackends runs test once per backend kind, each with a tunnel of its
// own; o's backend fields are filled in from the kind.
func overBackends(t *testing.T, test func(t *testing.T, o tunnelOpts)) {
	for _, k := range backendKinds {
		t.Run(k.name, func(t *testing.T) { test(t, k.opts) })
	}
}

// startWithTarget starts a tunnel with o to a test target of its own and
// waits for its session.
func startWithTarget(t *testing.T, o tunnelOpts) (*tunnel, *target) {
	t.Helper()
	tg := startTarget(t)
	o.targetPort = tg.port()
	tn := startTunnel(t, o)
	tn.waitSession()
	return tn, tg
}

// TestBulkBothWays: a large upload (the target answers its SHA-256) and a
// large download (a known pattern, hashed here) on one tunnel.
func TestBulkBothWays(t *testing.T) {
	overBackends(t, func(t *testing.T, o tunnelOpts) {
		tn, _ := startWithTarget(t, o)
		n := 16 << 20
		if testing.Short() {
			n = 2 << 20
		}
		halfClose(t, tn, n) // upload: n bytes, then the target's digest of them
		downloadChecked(t, tn, n)
		if r := tn.srv.Stats.StreamsReset.Load(); r != 0 {
			t.Errorf("%d streams reset", r)
		}
	})
}

// downloadChecked has the target send n pattern bytes and checks their
// digest.
func downloadChecked(t *testing.T, tn *tunnel, n int) {
	t.Helper()
	c := tn.dial(modeSource)
	defer c.Close()
	var nb [8]byte
	binary.BigEndian.PutUint64(nb[:], uint64(n))
	if _, err := c.Write(nb[:]); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	h := sha256.New()
	got, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("download: %v after %d bytes", err, got)
	}
	if got != int64(n) || !bytes.Equal(h.Sum(nil), sourceDigest(n)) {
		t.Fatalf("download: %d of %d bytes, digest mismatch=%v", got, n, !bytes.Equal(h.Sum(nil), sourceDigest(n)))
	}
}

// sourceDigest is the SHA-256 of the n bytes the target sends in
// modeSource.
func sourceDigest(n int) []byte {
	want := sha256.New()
	buf := make([]byte, 64*1024)
	Pattern(buf, 7)
	for left := n; left > 0; left -= len(buf) {
		want.Write(buf[:min(left, len(buf))])
	}
	return want.Sum(nil)
}
