package stages

import (
	"context"
	"testing"
	"time"

	"usocks/wire"
)

func TestMuxBatchesControlFirst(t *testing.T) {
	control := make(chan Frame, 8)
	data := make(chan Frame, 8)
	out := make(chan Batch, 1)
	shutdown := make(chan struct{})
	for i := 0; i < 3; i++ {
		data <- Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: uint16(i + 1), Payload: []byte("x")}}
	}
	control <- Frame{Frame: wire.Frame{Type: wire.FrameWindow, Stream: 9, Payload: wire.WindowPayload(nil, 5)}}
	m := &Mux{Control: control, Data: data, Out: out, Shutdown: shutdown}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	b := <-out
	if len(b) != 4 || b[0].Type != wire.FrameWindow {
		t.Fatalf("batch %v: want 4 frames, control first", b)
	}
	close(shutdown)
	last := <-out
	if len(last) != 1 || last[0].Type != wire.FrameClose {
		t.Fatalf("final batch %v, want one CLOSE", last)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok := <-out; ok {
		t.Fatal("mux did not close its output")
	}
	cancel()
}

func TestMuxFinalReset(t *testing.T) {
	out := make(chan Batch, 1)
	shutdown := make(chan struct{})
	close(shutdown)
	m := &Mux{Control: make(chan Frame), Data: make(chan Frame), Out: out, Shutdown: shutdown,
		Final: func() (wire.FrameType, bool) { return wire.FrameReset, true }}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b := <-out; len(b) != 1 || b[0].Type != wire.FrameReset {
		t.Fatalf("got %v, want RESET", b)
	}
	// No final frame at all (v1 first-packet rule): nothing is sent.
	out2 := make(chan Batch, 1)
	m2 := &Mux{Control: make(chan Frame), Data: make(chan Frame), Out: out2, Shutdown: shutdown,
		Final: func() (wire.FrameType, bool) { return 0, false }}
	if err := m2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, ok := <-out2; ok {
		t.Fatalf("got %v, want nothing", b)
	}
}

func TestMuxStopsOnContext(t *testing.T) {
	m := &Mux{Control: make(chan Frame), Data: make(chan Frame), Out: make(chan Batch), Shutdown: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := m.Run(ctx); err == nil {
		t.Fatal("want ctx error")
	}
}
