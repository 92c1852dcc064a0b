package stages

import (
	"context"
	"testing"

	"usocks/wire"
)

// At Shutdown the mux sends every frame queued before it (a stream's last
// data and FIN may fill many batches), then the final frame, last.
func TestMuxShutdownSendsEverythingQueued(t *testing.T) {
	for _, queued := range []int{0, 1, maxBatchFrames, DataQueueLen} {
		data, control := make(chan Frame, DataQueueLen), make(chan Frame, ControlQueueLen)
		out := make(chan Batch, BatchQueueLen) // its batches are reused once taken: read as encrypt does
		shutdown := make(chan struct{})
		for i := range queued {
			f := payloadFrame(wire.MaxPayloadLen, byte(i))
			f.Stream = uint16(i + 1)
			data <- f
		}
		control <- Frame{Frame: wire.Frame{Type: wire.FrameWindow, Stream: 9, Payload: wire.WindowPayload(nil, 1)}}
		close(shutdown)
		m := &Mux{Control: control, Data: data, Out: out, Shutdown: shutdown, Log: testLog()}
		done := make(chan error, 1)
		go func() { done <- m.Run(context.Background()) }()
		var got []wire.Frame
		for b := range out {
			if len(b) > maxBatchFrames+1 {
				t.Errorf("a batch of %d frames", len(b))
			}
			for _, f := range b {
				got = append(got, f.Frame)
				f.Release()
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		next := uint16(1)
		for i, f := range got {
			switch {
			case i == len(got)-1:
				if f.Type != wire.FrameClose {
					t.Errorf("%d queued: last frame %v, want CLOSE", queued, f)
				}
			case f.Type == wire.FrameStream:
				if f.Stream != next {
					t.Errorf("%d queued: frame %d is stream %d, want %d", queued, i, f.Stream, next)
				}
				next++
			}
		}
		if int(next-1) != queued || len(got) != queued+2 {
			t.Errorf("%d queued: %d data frames and %d in all sent, want every one, a WINDOW and CLOSE", queued, next-1, len(got))
		}
	}
}
