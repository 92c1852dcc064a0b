package stages

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"usocks/wire"
)

// A v1 stream keeps reading its local side after the peer's FIN, and
// answers with its own FIN once the local side ends or has been silent
// for legacyFINLinger. The linger counts silence, not the whole answer: a
// local side that is still sending when the linger has passed since the
// peer's FIN must get every byte through (an echo that lagged more than
// the linger behind a loaded tunnel lost its tail and ended cleanly, so
// the app saw a short stream and no error).
func TestLegacyLingerCountsSilence(t *testing.T) {
	const chunk = 1000
	cases := []struct {
		name string
		// sendAt is when (after the peer's FIN) the local side sends a
		// chunk each; it closes after the last one if closes.
		sendAt []time.Duration
		closes bool
		// wantFINAt is when the stream's FIN goes out.
		wantFINAt time.Duration
	}{
		{"answer longer than the linger", []time.Duration{7 * time.Second, 14 * time.Second, 21 * time.Second, 28 * time.Second}, true, 28 * time.Second},
		{"silent after its answer", []time.Duration{3 * time.Second, 6 * time.Second}, false, 6*time.Second + legacyFINLinger},
		{"silent from the start", nil, false, legacyFINLinger},
		{"ends at once", nil, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				data, control := make(chan Frame, 64), make(chan Frame, 64)
				s := newStream(5, data, control, testLog(), true)
				request := payloadFrame(100, 'q')
				want := append([]byte(nil), request.Payload...)
				if err := s.recv.pushWait(request, s.aborted, nil); err != nil {
					t.Fatal(err)
				}
				s.recv.finish() // the peer's FIN right after its data
				local, target := net.Pipe()
				start := time.Now()
				targetDone := make(chan struct{})
				var answer []byte
				go func() {
					defer close(targetDone)
					defer target.Close()
					got := make([]byte, len(want))
					if _, err := io.ReadFull(target, got); err != nil || !bytes.Equal(got, want) {
						t.Errorf("target read %q, %v; want the peer's %d bytes", got, err, len(want))
						return
					}
					for i, at := range tc.sendAt {
						time.Sleep(time.Until(start.Add(at)))
						b := bytes.Repeat([]byte{byte('a' + i)}, chunk)
						if _, err := target.Write(b); err != nil {
							return // the stream gave up on the local side
						}
						answer = append(answer, b...)
					}
					if !tc.closes {
						_, _ = io.Copy(io.Discard, target) // until the stream closes it
					}
				}()
				actorDone := make(chan struct{})
				go func() {
					defer close(actorDone)
					s.run(context.Background(), func() (net.Conn, error) { return local, nil })
				}()
				var sent []byte
				for {
					f := <-data
					fin := f.Flags.Has(wire.FlagFIN)
					sent = append(sent, f.Payload...)
					f.Release()
					if fin {
						break
					}
				}
				finAt := time.Since(start)
				<-actorDone
				<-targetDone
				if !bytes.Equal(sent, answer) || len(sent) != chunk*len(tc.sendAt) {
					t.Errorf("sent %d bytes into the tunnel before FIN; the local side answered %d of %d", len(sent), len(answer), chunk*len(tc.sendAt))
				}
				if finAt != tc.wantFINAt {
					t.Errorf("FIN %v after the peer's, want %v", finAt, tc.wantFINAt)
				}
				if st := s.currentState(); st != stateClosed {
					t.Errorf("stream ended %v, want closed", st)
				}
			})
		})
	}
}
