package stages

import (
	"context"
	"testing"

	"usocks/wire"
)

// TestTrimKeptBuffers: a running encrypt stage's kept buffers are dropped
// by TrimKeptBuffers, the stage goes on sealing with fresh ones, and a
// stage that ended is no longer trimmed.
func TestTrimKeptBuffers(t *testing.T) {
	var key [wire.KeySize]byte
	a, err := wire.NewAEAD(wire.CipherChaCha20Poly1305, &key)
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan Batch)
	out := make(chan Sealed)
	e := &Encrypt{Sealer: wire.NewSealer(a), In: in, Out: out}
	done := make(chan error)
	go func() { done <- e.Run(context.Background()) }()
	seal := func(b Batch) Sealed {
		t.Helper()
		select {
		case in <- b:
		case err := <-done:
			t.Fatalf("encrypt ended: %v", err)
		}
		return <-out
	}
	for range 3 {
		e.Recycle(seal(Batch{dataFrame(1, 16000), dataFrame(2, 16000)}))
	}
	if n := TrimKeptBuffers(); n != 1 {
		t.Fatalf("trimmed %d kept buffers, want 1", n)
	}
	if n := TrimKeptBuffers(); n != 0 {
		t.Fatalf("a second trim dropped %d buffers", n)
	}
	if s := seal(dataBatch(100)); len(s.B) == 0 || cap(s.B) >= 16000 {
		t.Fatalf("after the trim a batch was sealed into %d bytes of a %d-byte buffer", len(s.B), cap(s.B))
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.Recycle(Sealed{B: make([]byte, 0, 1024)})
	if n := TrimKeptBuffers(); n != 0 {
		t.Fatalf("trimmed %d buffers of a stage that ended", n)
	}
}
