package stages

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"usocks/wire"
)

// TestDefenceCutKeepsSentPiecesBuffer: a paced data frame is split into
// cells; the pieces alias the buffer that the last piece owns. When the
// stage is cut (ctx) after it has handed out the first piece, encrypt may
// still be sealing that piece, so the stage must not release the last
// piece's buffer, whether that piece still waits in the queue or sits in
// the batch the stage was sending. Checked through the ledger: a released
// buffer is poisoned at once.
func TestDefenceCutKeepsSentPiecesBuffer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sending bool // cut while the stage blocks sending the last piece
	}{
		{"last piece queued", false},
		{"last piece being sent", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := watchPool(t)
			synctest.Test(t, func(t *testing.T) {
				params := &DefenceParams{Cell: DefaultCell, Idle: time.Second, Rate: 1000}
				in := make(chan Batch, 1)
				out := make(chan Batch)
				d := &Defence{Params: params, In: in, Out: out, Rand: rand.New(rand.NewPCG(7, 8))}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := make(chan error, 1)
				go func() { done <- d.Run(ctx) }()

				body := newShaper(params, rand.New(rand.NewPCG(1, 2))).cellBody
				n := body + 100 // two pieces
				buf := getBuf(n)
				for i := range n {
					buf.B[i] = byte(i)
				}
				want := append([]byte(nil), buf.B[:n]...)
				in <- Batch{{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 3, Payload: buf.B[:n]}, buf: buf}}

				// Take batches as encrypt would, up to the first piece.
				var first Frame
				for found := false; !found; {
					for _, f := range <-out {
						if f.Type == wire.FrameStream {
							first, found = f, true
						}
					}
				}
				if first.buf != nil || len(first.Payload) != body {
					t.Fatalf("first piece: %d bytes, owns a buffer %v; want %d, none", len(first.Payload), first.buf != nil, body)
				}
				if tc.sending {
					time.Sleep(time.Second) // the next slot: the stage blocks sending the last piece
				}
				synctest.Wait()
				cancel()
				if err := <-done; err != context.Canceled {
					t.Fatalf("Run: %v, want context.Canceled", err)
				}
				// Encrypt, still sealing the first piece, reads its bytes.
				if !bytes.Equal(first.Payload, want[:body]) {
					t.Fatal("the buffer of a piece handed to encrypt was released (poisoned) when the stage was cut")
				}
				if l.outstanding() != 1 {
					t.Fatalf("%d buffers out, want the frame's (dropped, not released)", l.outstanding())
				}
			})
		})
	}
}
