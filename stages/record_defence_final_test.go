package stages

import (
	"context"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"usocks/wire"
)

// The session's last frame is the last record: once the defence stage has
// sent a batch with CLOSE (or RESET) it sends nothing more — no tail or
// fill dummy, no frame that came after it — and ends, whatever its input
// still does. (A PAD after CLOSE made the peer's end look insecure.)
func TestDefenceSendsNothingAfterFinal(t *testing.T) {
	for _, final := range []wire.FrameType{wire.FrameClose, wire.FrameReset} {
		for _, policy := range []wire.DefencePolicy{wire.DefenceStandard, wire.DefenceMax} {
			synctest.Test(t, func(t *testing.T) {
				in := make(chan Batch, 1)
				out := make(chan Batch, 64)
				d := &Defence{Params: DefencePolicy(policy, Server), In: in, Out: out, Rand: rand.New(rand.NewPCG(5, 6))}
				done := make(chan error, 1)
				go func() { done <- d.Run(context.Background()) }()
				b := append(dataBatch(3000), Frame{Frame: wire.Frame{Type: final}}, Frame{Frame: wire.Frame{Type: wire.FramePing}})
				in <- b
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(time.Minute):
					t.Fatalf("%v/%v: the stage still runs a minute after the final frame", policy, final)
				}
				var types []wire.FrameType
				for b := range out {
					for _, f := range b {
						types = append(types, f.Type)
					}
				}
				last := len(types) - 1
				for i, ty := range types {
					if (ty == final) != (i == last) {
						t.Fatalf("%v/%v: frames sent %v; want %v last and once", policy, final, types, final)
					}
				}
			})
		}
	}
}
