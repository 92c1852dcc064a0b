package stages

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"usocks/wire"
)

// TestDecryptFailedBeforeEnd: in a session that is not resumable, a
// record that fails authentication is reported through Failed before Out
// closes, so the session knows of the failure (and sends RESET) before
// the demux sees its input end, which it would take for an insecure close
// (sending no RESET). A clean end and a cancelled context call no Failed.
func TestDecryptFailedBeforeEnd(t *testing.T) {
	var key [wire.KeySize]byte
	_, _ = rand.Read(key[:])
	c := wire.CipherChaCha20Poly1305
	k := key
	s, err := wire.NewSealerKey(c, &k)
	if err != nil {
		t.Fatal(err)
	}
	data := &wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: []byte("hello")}
	good, _ := s.SealFrame(nil, data, 0)
	second, _ := s.SealFrame(nil, data, 0)
	flipped := append([]byte(nil), second...)
	flipped[len(flipped)-3] ^= 0x10 // inside the tag

	for _, tc := range []struct {
		name       string
		in         []byte
		cancel     bool
		want       error
		wantFailed bool
	}{
		{"clean end", append(append([]byte(nil), good...), second...), false, nil, false},
		{"bit flipped in the second record", append(append([]byte(nil), good...), flipped...), false, wire.ErrAuth, true},
		{"cancelled", good, true, context.Canceled, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := key
			o, _ := wire.NewOpenerKey(c, &k)
			chunks := make(chan Chunk, 1)
			out := make(chan Frame, 8)
			var failed error
			outClosedFirst := false
			d := &Decrypt{Opener: o, In: chunks, Out: out, Log: testLog(), Failed: func(err error) {
				failed = err
				// Out holds the frames opened before; drain them and see
				// whether it is closed already.
				for {
					select {
					case f, ok := <-out:
						if !ok {
							outClosedFirst = true
							return
						}
						f.Release()
						continue
					default:
					}
					return
				}
			}}
			chunks <- Chunk{B: tc.in}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				cancel()
			} else {
				close(chunks)
			}
			err := d.Run(ctx)
			for f := range out {
				f.Release()
			}
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Run: %v, want %v", err, tc.want)
			}
			if (failed != nil) != tc.wantFailed {
				t.Fatalf("Failed told %v; want a call: %v", failed, tc.wantFailed)
			}
			if tc.wantFailed && !errors.Is(failed, wire.ErrAuth) {
				t.Fatalf("Failed told %v, want wire.ErrAuth", failed)
			}
			if outClosedFirst {
				t.Fatal("Out closed before Failed was told: the demux could see the end first")
			}
		})
	}
}
