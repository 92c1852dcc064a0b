package stages

import (
	"context"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"usocks/wire"
)

// stallFrontend connects every stream to a target that never reads: the
// down pump takes what it can and then blocks in its write.
type stallFrontend struct {
	streams chan *stream
	targets chan net.Conn
}

func (fe *stallFrontend) Open(_ context.Context, s StreamIO) (net.Conn, error) {
	c, target := net.Pipe()
	fe.targets <- target
	fe.streams <- s.(*stream)
	return c, nil
}

// TestDemuxCreditIsExact: the receiver resets a stream as soon as the bytes
// received on it exceed the credit it has granted in all (SPEC-v2.md §6d,
// "Flow control"), whatever its down pump has already taken out of the
// receive buffer.
func TestDemuxCreditIsExact(t *testing.T) {
	t.Skip("known gap, SPEC-v2.md §6d: the demux bounds the bytes still in the receive buffer, " +
		"not received minus granted, so an overrun by what the down pump holds (up to 16 frames) or has " +
		"written but not yet granted (below 64 KiB) goes unnoticed")
	fe := &stallFrontend{streams: make(chan *stream, 1), targets: make(chan net.Conn, 1)}
	r := newDemuxRig(t, Server, &testFrontend{}, func(d *Demux) { d.Frontend = fe })
	defer func() {
		_ = r.stop()
	}()
	r.send(stf(wire.FlagSYN|wire.FlagDAT, 1, "x"))
	s := <-fe.streams
	defer (<-fe.targets).Close()
	// The pump has taken the first byte and is blocked writing it.
	deadline := time.Now().Add(10 * time.Second)
	for s.recv.buffered() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the down pump did not take the first byte")
		}
		runtime.Gosched()
	}
	// One byte spent, nothing granted back: the peer has streamWindow-1
	// bytes of credit left and sends streamWindow.
	chunk := strings.Repeat("y", wire.MaxPayloadLen)
	for sent := 0; sent < streamWindow; sent += len(chunk) {
		r.send(stf(wire.FlagDAT, 1, chunk))
	}
	if got := r.answers(); !sameFrames(got, []wire.Frame{rstOf(1)}) {
		t.Fatalf("answers %s, want an RST for the overrun", frameList(got))
	}
}

// TestDemuxResetSurvivesAFullControlQueue: the RST for a stream the
// receiver resets reaches the peer even when the control queue was full at
// the time (SPEC-v2.md §6d): only answers may be dropped.
func TestDemuxResetSurvivesAFullControlQueue(t *testing.T) {
	t.Skip("known gap, SPEC-v2.md §6d: stream.sendRST drops the RST when the control queue is full, " +
		"so the peer holds the stream until its idle timeout and a later SYN on the id is a duplicate")
	r := newDemuxRig(t, Server, &testFrontend{mode: "block"}, nil)
	defer func() {
		_ = r.stop()
	}()
	r.send(stf(wire.FlagSYN, 1, ""))
	// Fill the control queue with PONGs nobody reads yet.
	for i := 0; i < ControlQueueLen; i++ {
		r.send(wire.Frame{Type: wire.FramePing})
	}
	// An overrun: the stream is reset while the queue is full.
	r.send(stf(wire.FlagDAT, 1, strings.Repeat("z", streamWindow)))
	r.send(stf(wire.FlagDAT, 1, "!"))
	// Read the queues empty and on: the RST may come at any point, on
	// either queue.
	timeout := time.After(10 * time.Second)
	for {
		var f Frame
		select {
		case f = <-r.control:
		case f = <-r.data:
		case <-timeout:
			t.Fatal("the stream's RST never reached the mux")
		}
		rst := f.Type == wire.FrameStream && f.Flags == wire.FlagRST && f.Stream == 1
		f.Release()
		if rst {
			return
		}
	}
}
