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
	ghost := wire.NewSealer(a) // the old key, kept outside for the test
	k := key
	s, err := wire.NewSealerKey(c, &k)
	if err != nil {
		t.Fatal(err)
	}
	send := &Rekeyer{Rand: rand.Reader, After: 1}
	if !send.due(2) {
		t.Fatal("a sender past After must be due")
	}
	data := &wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: []byte("hello")}
	stream, _ := s.SealFrame(nil, data, 0)
	if stream, err = send.rekey(stream, s); err != nil {
		t.Fatal(err)
	}
	good, _ := s.SealFrame(nil, data, 0)
	// The old key, at the counter the new key restarted from: a record
	// sealed as if the sender had not moved on.
	_, _ = ghost.SealFrame(nil, data, 0)
	_, _ = ghost.SealFrame(nil, &wire.Frame{Type: wire.FramePad}, 0)
	stale, _ := ghost.SealFrame(nil, data, 0)

	run := func(in []byte) (int, error) {
		k := key
		o, _ := wire.NewOpenerKey(c, &k)
		chunks := make(chan Chunk, 1)
		out := make(chan Frame, 8)
		d := &Decrypt{Opener: o, In: chunks, Out: out}
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
	s, _ := wire.NewSealerKey(c, &key)
	rk := &Rekeyer{Rand: failingReader{}, After: 1}
	in := make(chan Batch, 2)
	out := make(chan Sealed, 2)
	e := &Encrypt{Sealer: s, In: in, Out: out, Rekey: rk, Log: testLog()}
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
	// The stage made its sealer forget the key: it can no longer rekey.
	if _, err := s.SealKeyUpdate(nil, make([]byte, wire.SaltSize)); !errors.Is(err, wire.ErrNoKey) {
		t.Fatalf("the key was not forgotten: rekey after the end: %v", err)
	}
}
