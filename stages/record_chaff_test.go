package stages

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"usocks/wire"
)

func TestChaffBurst(t *testing.T) {
	out := make(chan Frame, 1000)
	sent := 0
	c := &Chaff{Out: out, Rand: rand.Reader, MaxFrames: 20, Window: 200 * time.Millisecond, Sent: func() { sent++ }}
	start := time.Now()
	if err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(out)
	n := 0
	for f := range out {
		n++
		if f.Type != wire.FramePad || len(f.Payload) != 0 || f.padLen < 0 || f.padLen >= 1400 {
			t.Fatalf("chaff frame %+v (pad %d)", f.Frame, f.padLen)
		}
	}
	if n < 1 || n > 20 || n != sent {
		t.Fatalf("%d frames (%d counted), want 1..20", n, sent)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("burst took %v, window 200ms", el)
	}
}

// A full control queue drops chaff instead of waiting.
func TestChaffIsDroppable(t *testing.T) {
	out := make(chan Frame) // never read
	c := &Chaff{Out: out, Rand: rand.Reader, MaxFrames: 5, Window: 50 * time.Millisecond}
	done := make(chan error)
	go func() { done <- c.Run(context.Background()) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("chaff blocked on a full queue")
	}
}

// Idle chaff keeps coming after the burst until the session stops.
func TestIdleChaff(t *testing.T) {
	out := make(chan Frame, 1000)
	stop := make(chan struct{})
	c := &Chaff{Out: out, Rand: rand.Reader, MaxFrames: 1, Window: 10 * time.Millisecond, Idle: 20 * time.Millisecond, Stop: stop}
	done := make(chan error)
	go func() { done <- c.Run(context.Background()) }()
	deadline := time.After(10 * time.Second)
	for n := 0; n < 10; {
		select {
		case <-out:
			n++
		case <-deadline:
			t.Fatalf("only %d chaff frames in 10s with a 20ms mean", n)
		}
	}
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("idle chaff did not stop with the session")
	}
}
