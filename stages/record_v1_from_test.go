package stages

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	v1 "usocks/wire/v1"
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

// TestDecryptV1ReadsBackendItself: a v1 decrypt stage whose From is the
// backend reader hands on the same frames as one fed through In, at
// every split of the stream, over a real TCP socket too (the raw-socket
// path), and the reader's Tap sees every byte. A reset after the close
// record is the original's normal end (nil); before it, the socket's
// error; EOF inside a record, v1's truncation.
func TestDecryptV1ReadsBackendItself(t *testing.T) {
	k := v1.DeriveKey("from test key")
	s, err := v1.NewRandomSealer(k, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	stream := s.Sync()
	for _, m := range []v1.Message{
		{Flags: v1.SYN | v1.DAT, ID: 1, Payload: []byte("hello")},
		{Flags: v1.DAT, ID: 1, Payload: bytes.Repeat([]byte("x"), 3000)},
		{Flags: v1.FIN, ID: 1},
	} {
		stream = s.AppendMessage(stream, v1.AppendMessage(nil, m))
	}
	noClose := len(stream)
	stream = s.AppendClose(stream, [4]byte{1, 2, 3, 4})

	run := func(conn io.Reader, viaIn bool) (string, int) {
		out := make(chan Frame, 16)
		tapped := 0
		rd := &BackendReader{Conn: conn, Tap: func(b []byte) { tapped += len(b) }}
		d := &DecryptV1{Opener: v1.NewOpener(k), Out: out}
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
			err = errors.New("backend error")
		}
		return fmt.Sprintf("err=%v %s", err, got.String()), tapped
	}
	want, _ := run(&chunkReader{chunks: [][]byte{stream}}, true)
	if !bytes.HasPrefix([]byte(want), []byte("err=<nil> ")) || bytes.Count([]byte(want), []byte(";")) != 4 {
		t.Fatalf("via In: %s", want)
	}
	for i := 1; i < len(stream); i += 53 {
		got, tapped := run(&chunkReader{chunks: [][]byte{stream[:i], stream[i:]}}, false)
		if got != want || tapped != len(stream) {
			t.Fatalf("split at %d: %s (tapped %d of %d)\nwant %s", i, got, tapped, len(stream), want)
		}
	}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	// A reset after the close record: the end, as EOF would be.
	if got, _ := run(&chunkReader{chunks: [][]byte{stream}, err: reset}, false); got != want {
		t.Errorf("reset after the close record: %s\nwant %s", got, want)
	}
	// A reset before it: the socket's error, after the frames before it.
	if got, _ := run(&chunkReader{chunks: [][]byte{stream[:noClose]}, err: reset}, false); !bytes.HasPrefix([]byte(got), []byte("err=backend error STREAM")) {
		t.Errorf("reset before the close record: %s", got)
	}
	// EOF inside a record: what v1 makes of it (EndV1), as via In.
	for _, n := range []int{noClose - 3, len(stream) - 3} {
		got, _ := run(&chunkReader{chunks: [][]byte{stream[:n]}}, false)
		same, _ := run(&chunkReader{chunks: [][]byte{stream[:n]}}, true)
		if got != same {
			t.Errorf("EOF %d bytes in: %s\nvia In: %s", n, got, same)
		}
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
			n := min(len(rest), 700)
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
