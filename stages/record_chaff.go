package stages

import (
	"context"
	"encoding/binary"
	"io"
	"math"
	"slices"
	"time"

	"usocks/wire"
)

// Chaff is the FRONT-style defence of SPEC-v2.md §7b: in the first Window
// of a backend it sends N ~ U[1, MaxFrames] PAD frames at times drawn from
// a Rayleigh distribution (many early, fewer later), each padded like a
// data record. The receiver verifies and discards them. It blurs the first
// seconds of a connection, when page loads and handshakes are most
// recognisable. Chaff is droppable: when the control queue is full the
// frame is skipped.
type Chaff struct {
	Out       chan<- Frame
	Rand      io.Reader
	MaxFrames int           // N's upper bound
	Window    time.Duration // W
	// Idle, if set, keeps sending a PAD frame at random intervals with
	// this mean (exponentially distributed) after the burst, for the life
	// of the session: cover traffic for quiet tunnels.
	Idle time.Duration
	// Stop, when closed, ends the chaff (the session is closing).
	Stop <-chan struct{}
	// Sent counts PAD frames queued.
	Sent func()
}

// Chaff defaults: at most 64 frames in the first 6 seconds (≈ 16 KiB on
// average, once per backend connection).
const (
	DefaultChaffFrames = 64
	DefaultChaffWindow = 6 * time.Second
)

// Run sends the burst and returns; it stops early when ctx ends.
func (c *Chaff) Run(ctx context.Context) error {
	n := 1 + c.draw(uint64(c.MaxFrames))
	// Rayleigh with scale σ = W/3 puts ~99 % of frames inside W.
	sigma := float64(c.Window) / 3
	times := make([]time.Duration, 0, n)
	for i := 0; i < int(n); i++ {
		u := (float64(c.draw(1<<52)) + 1) / (1 << 52)
		t := time.Duration(sigma * math.Sqrt(-2*math.Log(u)))
		times = append(times, min(t, c.Window))
	}
	slices.Sort(times)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for _, t := range times {
		if !c.wait(ctx, timer, time.Until(start.Add(t))) {
			return nil
		}
		c.send()
	}
	for c.Idle > 0 {
		u := (float64(c.draw(1<<52)) + 1) / (1 << 52)
		if !c.wait(ctx, timer, time.Duration(-math.Log(u)*float64(c.Idle))) {
			return nil
		}
		c.send()
	}
	return nil
}

// wait sleeps for d unless the session ends first.
func (c *Chaff) wait(ctx context.Context, timer *time.Timer, d time.Duration) bool {
	timer.Reset(d)
	select {
	case <-timer.C:
		return true
	case <-c.Stop:
	case <-ctx.Done():
	}
	return false
}

// send queues one PAD frame, or drops it if the queue is full. A PAD frame
// has no payload; its size is all padding, drawn over the sizes of small
// data records.
func (c *Chaff) send() {
	f := Frame{Frame: wire.Frame{Type: wire.FramePad}, padLen: int(c.draw(1400))}
	select {
	case c.Out <- f:
		if c.Sent != nil {
			c.Sent()
		}
	default:
	}
}

func (c *Chaff) draw(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	var b [8]byte
	if _, err := io.ReadFull(c.Rand, b[:]); err != nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b[:]) % n
}
