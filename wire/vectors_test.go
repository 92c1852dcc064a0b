package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Shared helpers of the v2 tests: the -update flag, the vector directory and
// a deterministic byte source.

// update regenerates the pinned vectors in testdata/v2 instead of comparing
// against them:
//
//	go test ./wire/ -run 'TestKAT|TestHandshakeVectors|TestRecordVectors' -update
var update = flag.Bool("update", false, "regenerate testdata/v2/*.json instead of comparing against it")

// vectorDir holds the v2 vectors, at the repository root beside the v1 ones.
const vectorDir = "../testdata/v2"

// loadVectors reads testdata/v2/name into v.
func loadVectors(t testing.TB, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatalf("reading vector file (regenerate with -update): %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("parsing %s: %v", name, err)
	}
}

// saveVectors writes v to testdata/v2/name; only with -update.
func saveVectors(t testing.TB, name string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if err := os.MkdirAll(vectorDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vectorDir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", filepath.Join(vectorDir, name))
}

// checkVectors compares got with the pinned file, or rewrites the file with
// -update. Both sides go through JSON so that field order and hex case do not
// matter.
func checkVectors[T any](t *testing.T, name string, got T) {
	t.Helper()
	if *update {
		saveVectors(t, name, got)
		return
	}
	var want T
	loadVectors(t, name, &want)
	gb, _ := json.MarshalIndent(got, "", " ")
	wb, _ := json.MarshalIndent(want, "", " ")
	if bytes.Equal(gb, wb) {
		return
	}
	t.Errorf("%s does not match the code (run with -update only if the change is intended):", name)
	gl, wl := strings.Split(string(gb), "\n"), strings.Split(string(wb), "\n")
	shown := 0
	for i := range max(len(gl), len(wl)) {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w && shown < 20 {
			t.Errorf("line %d:\n  file: %s\n  code: %s", i+1, w, g)
			shown++
		}
	}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func unhex32(t testing.TB, s string) [32]byte {
	t.Helper()
	b := unhex(t, s)
	if len(b) != 32 {
		t.Fatalf("want 32 bytes, got %d in %q", len(b), s)
	}
	return [32]byte(b)
}

func hexs(b []byte) string { return hex.EncodeToString(b) }

// detReader is a deterministic, stable byte stream: block i is
// SHA-256(seed || u64le(i)). Unlike math/rand it can never change under us,
// so vectors generated from it stay valid.
type detReader struct {
	seed []byte
	i    uint64
	buf  []byte
}

func newDetReader(seed string) *detReader { return &detReader{seed: []byte(seed)} }

func (r *detReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(r.buf) == 0 {
			h := sha256.New()
			h.Write(r.seed)
			var c [8]byte
			binary.LittleEndian.PutUint64(c[:], r.i)
			h.Write(c[:])
			r.i++
			r.buf = h.Sum(nil)
		}
		m := copy(p[n:], r.buf)
		r.buf = r.buf[m:]
		n += m
	}
	return n, nil
}

// bytes32 draws 32 bytes from r.
func (r *detReader) bytes32() [32]byte {
	var b [32]byte
	r.Read(b[:])
	return b
}

// ciphers is every record cipher, for table-driven record tests.
var ciphers = []CipherID{CipherChaCha20Poly1305, CipherAES256GCM}
