package stages

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"usocks/wire"
)

// After a KEYUPDATE the receiver accepts only the new key: a record sealed
// under the old key is rejected like any forgery.
func TestRekeyOldKeyRejected(t *testing.T) {
	var key [wire.KeySize]byte
	_, _ = rand.Read(key[:])
	c := wire.CipherChaCha20Poly1305
	a, _ := wire.NewAEAD(c, &key)
	old := wire.NewSealer(a)
	send := &Rekeyer{Cipher: c, Key: key, Rand: rand.Reader, After: 1}
	if !send.due(2) {
		t.Fatal("a sender past After must be due")
	}
	data := &wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: []byte("hello")}
	stream, _ := old.SealFrame(nil, data, 0)
	stream, next, err := send.rekey(stream, old)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := next.SealFrame(nil, data, 0)
	stale, _ := old.SealFrame(nil, data, 0) // the old key, after the update

	run := func(in []byte) (int, error) {
		oa, _ := wire.NewAEAD(c, &key)
		chunks := make(chan Chunk, 1)
		out := make(chan Frame, 8)
		d := &Decrypt{Opener: wire.NewOpener(oa), In: chunks, Out: out, Rekey: &Rekeyer{Cipher: c, Key: key}}
		chunks <- Chunk{B: in}
		close(chunks)
		err := d.Run(context.Background())
		n := 0
		for f := range out {
			n++
			f.Release()
		}
		return n, err
	}
	if n, err := run(append(append([]byte(nil), stream...), good...)); err != nil || n != 2 {
		t.Fatalf("new key after KEYUPDATE: %d frames, %v", n, err)
	}
	if n, err := run(append(append([]byte(nil), stream...), stale...)); !errors.Is(err, wire.ErrAuth) || n != 1 {
		t.Fatalf("old key after KEYUPDATE: %d frames, %v; want ErrAuth after the first", n, err)
	}
}

// failingReader fails every read (a salt that cannot be drawn).
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("no randomness") }

// A rekey that fails ends the session: the encrypt stage returns the
// error rather than logging it and sealing on under the worn key; its key
// is forgotten when it ends.
func TestRekeyFailureEndsSession(t *testing.T) {
	var key [wire.KeySize]byte
	_, _ = rand.Read(key[:])
	c := wire.CipherChaCha20Poly1305
	a, _ := wire.NewAEAD(c, &key)
	rk := &Rekeyer{Cipher: c, Key: key, Rand: failingReader{}, After: 1}
	in := make(chan Batch, 2)
	out := make(chan Sealed, 2)
	e := &Encrypt{Sealer: wire.NewSealer(a), In: in, Out: out, Rekey: rk, Log: testLog()}
	frame := func() Batch {
		return Batch{{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: []byte("x")}}}
	}
	in <- frame()
	in <- frame() // after two boxes under the key: due
	close(in)
	err := e.Run(context.Background())
	if err == nil {
		t.Fatal("Run ended cleanly after a failed rekey")
	}
	n := 0
	for range out {
		n++
	}
	if n != 1 {
		t.Fatalf("%d batches sealed, want only the one before the failed rekey", n)
	}
	if rk.Key != ([wire.KeySize]byte{}) {
		t.Fatal("the key was not forgotten")
	}
}
