package stages

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"usocks/wire"
)

// TestKeepAliveFindsDeadPeerWithinTwoIntervals runs the demux on a fake
// clock: a peer that stops sending is declared dead two keepalive
// intervals after its last frame (a timer of its own, not the next ping
// tick: that took up to three), and a peer that answers every PING stays.
func TestKeepAliveFindsDeadPeerWithinTwoIntervals(t *testing.T) {
	const k = 15 * time.Second
	for _, lastFrame := range []time.Duration{0, 5 * time.Second, 16 * time.Second, 29 * time.Second} {
		t.Run("silent after "+lastFrame.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				r := newDemuxRig(t, Client, &testFrontend{}, func(d *Demux) { d.KeepAlive = k })
				if lastFrame > 0 {
					time.Sleep(lastFrame)
					r.send(wire.Frame{Type: wire.FramePong})
				}
				err := <-r.done // the fake clock runs until the demux ends
				took := time.Since(start)
				r.cancel()
				if !errors.Is(err, ErrPeerDead) {
					t.Fatalf("Run = %v, want ErrPeerDead", err)
				}
				if want := lastFrame + deadAfter*k; took != want {
					t.Fatalf("dead after %v, want %v (two intervals after the last frame at %v)", took, want, lastFrame)
				}
			})
		})
	}
	t.Run("answering peer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newDemuxRig(t, Client, &testFrontend{}, func(d *Demux) { d.KeepAlive = k })
			pings := 0
			for pings < 10 {
				f := <-r.control
				if f.Type == wire.FramePing {
					pings++
					r.send(wire.Frame{Type: wire.FramePong, Payload: f.Payload})
				}
				f.Release()
			}
			select {
			case err := <-r.done:
				t.Fatalf("demux ended while the peer answered: %v", err)
			default:
			}
			r.cancel()
			<-r.done
		})
	})
}
