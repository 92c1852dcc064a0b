package stages

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"usocks/wire"
)

// chunkReader returns its chunks one per Read, then err (io.EOF if nil).
type chunkReader struct {
	chunks [][]byte
	err    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	if r.chunks[0] = r.chunks[0][n:]; len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// TestDecryptReadsBackendItself: a decrypt stage whose From is the backend
// reader (one goroutine for the link's input) hands on the same frames as
// one fed through In, at every split of the stream in two, over a real
// TCP socket too (the raw-socket path), and the reader's Tap sees every
// byte; the end of input is clean, truncated or the socket's error, as
// with a reader of its own.
func TestDecryptReadsBackendItself(t *testing.T) {
	var key [wire.KeySize]byte
	_, _ = rand.Read(key[:])
	c := wire.CipherAES256GCM
	k := key
	s, _ := wire.NewSealerKey(c, &k)
	var stream []byte
	for _, f := range []wire.Frame{
		{Type: wire.FrameStream, Flags: wire.FlagSYN, Stream: 3},
		{Type: wire.FramePad},
		{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 3, Payload: bytes.Repeat([]byte("x"), 40000)},
		{Type: wire.FrameStream, Flags: wire.FlagDAT | wire.FlagFIN, Stream: 3, Payload: []byte("end")},
		{Type: wire.FrameClose},
	} {
		var err error
		if stream, err = s.SealFrame(stream, &f, 7); err != nil {
			t.Fatal(err)
		}
	}
	// run decrypts what conn delivers; via In (a reader goroutine's
	// chunks) when viaIn, else with From.
	run := func(conn io.Reader, viaIn bool) (string, int) {
		k := key
		o, _ := wire.NewOpenerKey(c, &k)
		out := make(chan Frame, 16)
		tapped := 0
		rd := &BackendReader{Conn: conn, Tap: func(b []byte) { tapped += len(b) }}
		d := &Decrypt{Opener: o, Out: out}
		if viaIn {
			in := make(chan Chunk, 64)
			rd.Out, d.In = in, in
			go func() { _ = rd.Run(context.Background()) }()
		} else {
			d.From = rd
		}
		err := d.Run(context.Background())
		var got bytes.Buffer
		for f := range out {
			fmt.Fprintf(&got, "%v %d;", f.Frame, len(f.Payload))
			f.Release()
		}
		var be *BackendError
		if errors.As(err, &be) {
			err = errors.New("backend error") // the same error either way, not the same pointer
		}
		return fmt.Sprintf("err=%v %s", err, got.String()), tapped
	}
	want, _ := run(&chunkReader{chunks: [][]byte{stream}}, true)
	if !bytes.HasPrefix([]byte(want), []byte("err=<nil> ")) || bytes.Count([]byte(want), []byte(";")) != 4 {
		t.Fatalf("via In: %s", want)
	}
	for i := 1; i < len(stream); i += 97 {
		got, tapped := run(&chunkReader{chunks: [][]byte{stream[:i], stream[i:]}}, false)
		if got != want || tapped != len(stream) {
			t.Fatalf("split at %d: %s (tapped %d of %d)\nwant %s", i, got, tapped, len(stream), want)
		}
	}
	// The end of input: truncated inside a record, as via In; a socket
	// error is the read's own (via In the reader goroutine returns it,
	// and decrypt sees a truncation).
	if got, _ := run(&chunkReader{chunks: [][]byte{stream[:len(stream)-1]}}, false); !bytes.Contains([]byte(got), []byte(ErrTruncated.Error())) {
		t.Errorf("truncated: %s", got)
	}
	if got, _ := run(&chunkReader{chunks: [][]byte{stream[:100]}, err: io.ErrClosedPipe}, false); !bytes.HasPrefix([]byte(got), []byte("err=backend error STREAM")) {
		t.Errorf("socket error: %s", got)
	}

	// Over loopback TCP, written in pieces: the raw-socket read path.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		w, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer w.Close()
		for rest := stream; len(rest) > 0; {
			n := min(len(rest), 1000)
			_, _ = w.Write(rest[:n])
			rest = rest[n:]
		}
	}()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got, tapped := run(conn, false); got != want || tapped != len(stream) {
		t.Fatalf("over TCP: %s (tapped %d of %d)\nwant %s", got, tapped, len(stream), want)
	}
}
