package stages

import (
	"context"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

// Mux is the stream actors → encrypt stage: the fan-in point of the tunnel.
//
// Two inputs feed it. Control (WINDOW, RST, PONG) has priority, so credit
// returns promptly even when data queues are full. Data (SYN, DAT, FIN from
// stream actors) is taken in arrival order, which interleaves busy streams
// frame by frame. Neither input is ever closed: many goroutines send on
// them, and the mux leaves on ctx or on Shutdown.
//
// The mux drains what is queued into one Batch without waiting for more,
// so a busy tunnel seals many frames per wake-up and an idle one adds no
// delay.
type Mux struct {
	Control <-chan Frame
	Data    <-chan Frame
	Out     chan<- Batch
	// Shutdown, when closed, makes the mux send the final frame of the
	// session (Final, by default CLOSE) and close Out. Frames still queued
	// are sent before it.
	Shutdown <-chan struct{}
	// Final says which frame ends the session: CLOSE for a clean end,
	// RESET after an error, or none (ok false) when nothing may be sent.
	Final func() (t wire.FrameType, ok bool)
	Log   *logrus.Entry
}

// batchRing is how many batch slices the mux cycles through. A batch is
// free again once encrypt has taken the next one: at most BatchQueueLen
// wait in the channel and one is being sealed, so a ring of two more is
// never reused while in use.
const batchRing = BatchQueueLen + 2

// Run multiplexes until ctx is done or Shutdown.
func (m *Mux) Run(ctx context.Context) error {
	defer close(m.Out)
	var ring [batchRing]Batch
	next := 0
	fresh := func() Batch {
		b := ring[next][:0]
		next = (next + 1) % batchRing
		return b
	}
	for {
		var first Frame
		select {
		case first = <-m.Control:
		default:
			select {
			case first = <-m.Control:
			case first = <-m.Data:
			case <-m.Shutdown:
				return m.shutdown(ctx, fresh)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		b := m.gather(append(fresh(), first))
		ring[(next+batchRing-1)%batchRing] = b // keep a grown array
		if err := m.send(ctx, b); err != nil {
			return err
		}
	}
}

// send hands b to Out; if ctx ends first, b's frames are released.
func (m *Mux) send(ctx context.Context, b Batch) error {
	select {
	case m.Out <- b:
		return nil
	case <-ctx.Done():
		for i := range b {
			b[i].Release()
		}
		return ctx.Err()
	}
}

// shutdown sends every frame queued when the end came (in batches within
// the usual bounds: a stream's last data and FIN, queued just before,
// must not be lost behind the final frame), then the final frame.
func (m *Mux) shutdown(ctx context.Context, fresh func() Batch) error {
	left := len(m.Control) + len(m.Data)
	for {
		b := m.gather(fresh())
		left -= len(b)
		last := left <= 0 || len(b) == 0
		if last {
			t, ok := wire.FrameClose, true
			if m.Final != nil {
				t, ok = m.Final()
			}
			if ok {
				b = append(b, Frame{Frame: wire.Frame{Type: t}})
			}
		}
		if len(b) > 0 {
			if err := m.send(ctx, b); err != nil {
				return err
			}
		}
		if last {
			return nil
		}
	}
}

// gather appends whatever is queued now, control first, up to the batch
// bounds.
func (m *Mux) gather(b Batch) Batch {
	bytes := 0
	for _, f := range b {
		bytes += len(f.Payload)
	}
	for len(b) < maxBatchFrames && bytes < maxBatchBytes {
		select {
		case f := <-m.Control:
			b = append(b, f)
			bytes += len(f.Payload)
			continue
		default:
		}
		select {
		case f := <-m.Data:
			b = append(b, f)
			bytes += len(f.Payload)
		default:
			return b
		}
	}
	return b
}
