package stages

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	"usocks/wire"
)

// TestDecryptEveryChunkSplit: the decrypt stage hands on the same frames,
// taps the same frames and counts the same chaff whatever the backend's
// chunking: the stream in one chunk, cut in two at every byte, and in
// one-byte chunks. The stream has padding, chaff, a rekey, control
// messages (ignored: no lanes) and a payload in the large buffer class.
func TestDecryptEveryChunkSplit(t *testing.T) {
	var key [wire.KeySize]byte
	_, _ = rand.Read(key[:])
	c := wire.CipherAES256GCM
	k := key
	s, _ := wire.NewSealerKey(c, &k)
	send := &Rekeyer{Rand: rand.Reader}
	var stream []byte
	seal := func(f wire.Frame, pad int) {
		var err error
		if stream, err = s.SealFrame(stream, &f, pad); err != nil {
			t.Fatal(err)
		}
	}
	seal(wire.Frame{Type: wire.FrameStream, Flags: wire.FlagSYN, Stream: 3}, 17)
	seal(wire.Frame{Type: wire.FramePad}, 300)
	// Control messages, known and unknown: ignored without lanes (§7c).
	seal(wire.ControlFrame(wire.Control{Type: wire.ControlSeq, Seq: 9}), 0)
	seal(wire.Frame{Type: wire.FrameControl, Payload: []byte{200, 1}}, 3)
	seal(wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 3, Payload: bytes.Repeat([]byte("x"), 3000)}, 0)
	stream, _ = send.rekey(stream, s)
	seal(wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT | wire.FlagFIN, Stream: 3, Payload: []byte("end")}, 5)
	seal(wire.Frame{Type: wire.FrameClose}, 0)

	run := func(chunks [][]byte) string {
		k := key
		o, _ := wire.NewOpenerKey(c, &k)
		in := make(chan Chunk, len(chunks))
		out := make(chan Frame, 16)
		var tapped, passed bytes.Buffer
		chaff := 0
		d := &Decrypt{Opener: o, In: in, Out: out,
			Tap:   func(f *wire.Frame, pad int) { fmt.Fprintf(&tapped, "%v pad=%d %x;", *f, pad, f.Payload) },
			Chaff: func() { chaff++ }}
		for _, ch := range chunks {
			in <- Chunk{B: ch}
		}
		close(in)
		err := d.Run(context.Background())
		for f := range out {
			fmt.Fprintf(&passed, "%v %x;", f.Frame, f.Payload)
			f.Release()
		}
		return fmt.Sprintf("err=%v chaff=%d\ntapped %s\npassed %s", err, chaff, tapped.String(), passed.String())
	}
	want := run([][]byte{stream})
	if !bytes.Contains([]byte(want), []byte("err=<nil> chaff=1")) || bytes.Count([]byte(want), []byte(";")) != 8+4 {
		t.Fatalf("one chunk:\n%s", want)
	}
	for i := 1; i < len(stream); i++ {
		if got := run([][]byte{stream[:i], stream[i:]}); got != want {
			t.Fatalf("split at %d of %d:\n%s\nwant\n%s", i, len(stream), got, want)
		}
	}
	var bytewise [][]byte
	for i := range stream {
		bytewise = append(bytewise, stream[i:i+1])
	}
	if got := run(bytewise); got != want {
		t.Fatalf("one-byte chunks:\n%s\nwant\n%s", got, want)
	}
	// Cut one byte short: the stage reports the truncation.
	if got := run([][]byte{stream[:len(stream)-1]}); !bytes.Contains([]byte(got), []byte(ErrTruncated.Error())) {
		t.Fatalf("cut short:\n%s", got)
	}
}
