package stages

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"testing/synctest"

	"usocks/wire"
)

// watchPool makes every payload buffer taken or released during the test
// go through a fresh ledger (released buffers poisoned and never reused, a
// second release recorded); the test fails on a double release. Tests
// that use it must not run in parallel.
func watchPool(t *testing.T) *bufLedger {
	t.Helper()
	l := newBufLedger(1<<12, false)
	prev := watch.Swap(l) // a usocks_poison build has its own: put back after
	t.Cleanup(func() {
		watch.Store(prev)
		for _, d := range l.doubles() {
			t.Error(d)
		}
	})
	return l
}

// TestBufLedger: the ledger itself poisons a released buffer, reports a
// second release, and counts what is still out.
func TestBufLedger(t *testing.T) {
	l := watchPool(t)
	b := getBuf(100)
	copy(b.B, "data")
	if l.outstanding() != 1 {
		t.Fatalf("outstanding = %d, want 1", l.outstanding())
	}
	putBuf(b)
	if !bytes.Equal(b.B, bytes.Repeat([]byte{poisonByte}, len(b.B))) {
		t.Fatal("a released buffer is not poisoned")
	}
	if l.outstanding() != 0 || len(l.doubles()) != 0 {
		t.Fatalf("outstanding %d, doubles %d after one release", l.outstanding(), len(l.doubles()))
	}
	putBuf(b)
	if n := len(l.doubles()); n != 1 {
		t.Fatalf("second release: %d reports, want 1", n)
	}
	l.double = nil // the double release above was the test's own
	if b2 := getBuf(100); b2 == b {
		t.Fatal("a quarantined buffer came back from the pool")
	}
}

// TestDecryptCancelledJoinedReleasesOnce is TestDecryptEndReleasesOnce
// for a frame the joiner put together from pieces (resumable sessions,
// FlagMORE): the joined frame is compacted into a buffer of its size, and
// a link cut while it waits for the demux releases that buffer once, and
// nothing else; no buffer is left out. (The joined buffer was the one
// released twice.) Checked through the ledger: poisoned, never reused.
func TestDecryptCancelledJoinedReleasesOnce(t *testing.T) {
	payload := bytes.Repeat([]byte("p"), 300) // small: compact moves it out of the joiner's large buffer
	cases := []struct {
		name   string
		resume bool
		frames []wire.Frame
		pad    int
	}{
		{"resumable, pieces joined", true, []wire.Frame{
			{Type: wire.FrameStream, Flags: wire.FlagDAT | wire.FlagMORE, Stream: 5, Payload: payload[:100]},
			{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 5, Payload: payload[100:]},
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := watchPool(t)
			var key [wire.KeySize]byte
			_, _ = rand.Read(key[:])
			c := wire.CipherChaCha20Poly1305
			k := key
			s, _ := wire.NewSealerKey(c, &k)
			var stream []byte
			for _, f := range tc.frames {
				var err error
				if stream, err = s.SealFrame(stream, &f, tc.pad); err != nil {
					t.Fatal(err)
				}
			}
			synctest.Test(t, func(t *testing.T) {
				k := key
				o, _ := wire.NewOpenerKey(c, &k)
				in := make(chan Chunk, 1)
				out := make(chan Frame) // the demux, busy: never reads
				d := &Decrypt{Opener: o, In: in, Out: out, Log: testLog()}
				if tc.resume {
					d.Resume = NewResumeState()
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- d.Run(ctx) }()
				in <- Chunk{B: stream}
				synctest.Wait() // decrypt waits to hand the frame on
				if l.outstanding() != 1 {
					t.Fatalf("%d buffers held while the frame waits, want 1 (compacted)", l.outstanding())
				}
				cancel() // the link is cut
				if err := <-done; err != context.Canceled {
					t.Fatalf("Run = %v, want context.Canceled", err)
				}
				if d.Resume != nil && d.Resume.Received() != 0 {
					t.Errorf("received = %d, want 0 (nothing was handed on)", d.Resume.Received())
				}
			})
			if n := l.outstanding(); n != 0 {
				t.Errorf("%d buffers not released after the stage ended", n)
			}
			if n := len(l.doubles()); n != 0 {
				t.Errorf("%d buffers released twice", n)
			}
		})
	}
}
