package stages

import (
	"context"
	"crypto/rand"
	"testing"
	"testing/synctest"
	"time"

	"usocks/wire"
)

// The chaff tests run in a synctest bubble: its clock moves only when
// every goroutine waits, so times are exact and nothing sleeps for real.

func TestChaffBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := make(chan Frame, 1000)
		sent := 0
		const window = 6 * time.Second
		c := &Chaff{Out: out, Rand: rand.Reader, MaxFrames: 20, Window: window, Sent: func() { sent++ }}
		start := time.Now()
		if err := c.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el > window {
			t.Fatalf("burst took %v, window %v", el, window)
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
	})
}

// The burst is spread over the window, many early and fewer late
// (Rayleigh, σ = W/3): frames arrive at distinct times, and the median
// falls in the first half of the window.
func TestChaffBurstTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 6 * time.Second
		out := make(chan Frame, 2000)
		var at []time.Duration
		start := time.Now()
		c := &Chaff{Out: out, Rand: rand.Reader, MaxFrames: 2000, Window: window,
			Sent: func() { at = append(at, time.Since(start)) }}
		if err := c.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(at) < 2 {
			t.Skip("a burst of one frame says nothing about timing")
		}
		distinct := map[time.Duration]bool{}
		for _, d := range at {
			if d > window {
				t.Fatalf("frame at %v, after the window", d)
			}
			distinct[d] = true
		}
		if len(distinct) < len(at)/2 {
			t.Fatalf("%d frames at only %d distinct times", len(at), len(distinct))
		}
		// The median of a Rayleigh(W/3) is 0.39 W; past 150 frames, one
		// beyond W/2 is a broken distribution, not chance (p < 1e-5).
		if len(at) >= 150 && at[len(at)/2] > window/2 {
			t.Fatalf("median frame at %v of a %v window, want early frames", at[len(at)/2], window)
		}
	})
}

// A full control queue drops chaff instead of waiting.
func TestChaffIsDroppable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := make(chan Frame) // never read
		sent := 0
		c := &Chaff{Out: out, Rand: rand.Reader, MaxFrames: 5, Window: time.Second, Sent: func() { sent++ }}
		start := time.Now()
		if err := c.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el > time.Second || sent != 0 {
			t.Fatalf("run took %v and queued %d frames on a full queue", el, sent)
		}
	})
}

// Idle chaff keeps coming after the burst until the session stops.
func TestIdleChaff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := make(chan Frame, 1000)
		stop := make(chan struct{})
		const mean = 20 * time.Second
		c := &Chaff{Out: out, Rand: rand.Reader, MaxFrames: 1, Window: time.Second, Idle: mean, Stop: stop}
		done := make(chan error)
		go func() { done <- c.Run(context.Background()) }()
		// The burst (one frame), then about an hour of idle chaff at a
		// 20 s mean: 180 frames expected; fewer than 100 is a broken rate.
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := len(out); n < 100 || n > 300 {
			t.Fatalf("%d chaff frames in an hour at a %v mean, want about 180", n, mean)
		}
		close(stop)
		synctest.Wait()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatal("idle chaff did not stop with the session")
		}
	})
}
