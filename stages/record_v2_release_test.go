package stages

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"testing/synctest"

	"usocks/wire"
)

// TestDecryptEndReleasesOnce: a link that ends while its decrypt stage
// waits to hand on a padded frame (the demux busy, a resumable session's
// link cut) releases that frame's buffer exactly once. The frame is
// compacted (a small payload in a padded record body: moved to a buffer
// of its own size, the body's buffer freed) before the wait; freeing the
// original frame again on the way out put one buffer in the pool twice,
// so two later frames shared it and one overwrote the other's bytes —
// same lengths, wrong data, after a backend cut.
func TestDecryptEndReleasesOnce(t *testing.T) {
	for _, resume := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) { decryptEndOnce(t, resume) })
	}
}

func decryptEndOnce(t *testing.T, resume bool) {
	{
		var key [wire.KeySize]byte
		_, _ = rand.Read(key[:])
		k := key
		s, _ := wire.NewSealerKey(wire.CipherAES256GCM, &k)
		// 3,000 bytes of payload in a body of ~19 KiB: the large class,
		// more than twice the payload, so compact copies it.
		f := wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 5, Payload: bytes.Repeat([]byte{7}, 3000)}
		rec, err := s.SealFrame(nil, &f, 16000)
		if err != nil {
			t.Fatal(err)
		}
		k = key
		o, _ := wire.NewOpenerKey(wire.CipherAES256GCM, &k)
		in := make(chan Chunk, 1)
		in <- Chunk{B: rec}
		out := make(chan Frame) // nobody reads: the stage waits
		d := &Decrypt{Opener: o, In: in, Out: out}
		if resume {
			d.Resume = NewResumeState()
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		synctest.Wait() // the stage has opened the record and waits on out
		if len(in) != 0 {
			t.Fatal("the stage did not take the record")
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("resume=%v: Run: %v, want context.Canceled", resume, err)
		}
		// doubleRelease panics in tests (main_test.go); the counter is
		// the production path's witness.
		if n := DoubleReleases.Load(); n != 0 {
			t.Fatalf("resume=%v: %d buffers released twice", resume, n)
		}
	}
}
