package stages

import (
	"errors"
	"testing"

	"usocks/wire"
)

func payloadFrame(n int, b byte) Frame {
	buf := getBuf(wire.FrameHeaderLen + n)
	p := buf.B[wire.FrameHeaderLen : wire.FrameHeaderLen+n]
	for i := range p {
		p[i] = b
	}
	return Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: p}, buf: buf}
}

func newRecv() *recvBuf {
	r := &recvBuf{notify: make(chan struct{}, 1), space: make(chan struct{}, 1)}
	r.window.Store(streamWindow)
	r.granted.Store(streamWindow)
	return r
}

func TestRecvBufOrderAndEOF(t *testing.T) {
	r := newRecv()
	for i := 0; i < 5; i++ {
		if err := r.push(payloadFrame(3000, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	r.finish()
	aborted := make(chan struct{})
	for i := 0; i < 5; i++ {
		f, eof, ok := r.pop(aborted)
		if !ok || eof || len(f.Payload) != 3000 || f.Payload[0] != byte(i) {
			t.Fatalf("pop %d: len %d eof %v ok %v", i, len(f.Payload), eof, ok)
		}
		f.Release()
	}
	if _, eof, ok := r.pop(aborted); !eof || !ok {
		t.Fatalf("want EOF after the data, got eof=%v ok=%v", eof, ok)
	}
	if r.size != 0 {
		t.Fatalf("size %d after draining", r.size)
	}
}

func TestRecvBufCoalescesSmallFrames(t *testing.T) {
	r := newRecv()
	for i := 0; i < 1000; i++ {
		if err := r.push(payloadFrame(10, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	if max := 10000/(smallBufSize-wire.FrameHeaderLen) + 1; len(r.chunks) > max {
		t.Fatalf("1000 ten-byte frames held in %d chunks; small frames must be coalesced", len(r.chunks))
	}
	var got []byte
	r.finish()
	for {
		f, eof, ok := r.pop(nil)
		if !ok || eof {
			break
		}
		got = append(got, f.Payload...)
		f.Release()
	}
	if len(got) != 10000 {
		t.Fatalf("got %d bytes, want 10000", len(got))
	}
	for i := 0; i < 1000; i++ {
		if got[i*10] != byte(i) || got[i*10+9] != byte(i) {
			t.Fatalf("byte order broken at frame %d", i)
		}
	}
}

func TestRecvBufFlowControlViolation(t *testing.T) {
	r := newRecv()
	for r.size+16384 <= streamWindow {
		if err := r.push(payloadFrame(16384, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.push(payloadFrame(16384, 1)); !errors.Is(err, errFlowControl) {
		t.Fatalf("push beyond the window: %v, want errFlowControl", err)
	}
	r.finish()
	if err := r.push(payloadFrame(1, 1)); !errors.Is(err, errFlowControl) {
		t.Fatalf("data after FIN: %v, want errFlowControl", err)
	}
	r.drain()
}

func TestRecvBufAbortWakesPop(t *testing.T) {
	r := newRecv()
	aborted := make(chan struct{})
	done := make(chan bool)
	go func() {
		_, _, ok := r.pop(aborted)
		done <- ok
	}()
	close(aborted)
	if <-done {
		t.Fatal("pop returned ok after abort")
	}
}

func TestStreamStateString(t *testing.T) {
	for st, want := range map[streamState]string{stateOpening: "opening", stateOpen: "open", stateLocalFIN: "local-fin", stateRemoteFIN: "remote-fin", stateClosed: "closed", stateReset: "reset"} {
		if st.String() != want {
			t.Errorf("%d: %q want %q", st, st.String(), want)
		}
	}
}
