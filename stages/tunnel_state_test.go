package stages

import (
	"context"
	"net"
	"testing"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

func testLog() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}

// A reset that arrives while the stream is opening (the server dialling
// its target, the client queueing its SYN) must stay a reset: the stream
// must not come out of opening as open, and its target must be reset.
func TestStreamResetWhileOpeningStaysReset(t *testing.T) {
	data, control := make(chan Frame, 16), make(chan Frame, 16)
	s := newStream(7, data, control, testLog(), false)
	app, target := net.Pipe()
	defer app.Close()
	s.run(context.Background(), func() (net.Conn, error) {
		s.abort(true) // the peer's RST, or the janitor, while dialling
		return target, nil
	})
	if st := stateOf(s); st != stateReset {
		t.Fatalf("state after a reset during open: %v, want reset", st)
	}
	select {
	case f := <-control:
		if !f.Flags.Has(wire.FlagRST) {
			t.Fatalf("control frame %v, want RST", f.Frame)
		}
	default:
		t.Fatal("no RST sent for the aborted stream")
	}
}

func stateOf(s *stream) streamState { return s.currentState() }

// The whole table of SPEC-v2.md §6c as the stream applies it: every state
// against every event.
func TestStreamStateTable(t *testing.T) {
	const x = streamState(-1) // the event does not apply: the state stays
	states := []streamState{stateOpening, stateOpen, stateLocalFIN, stateRemoteFIN, stateClosed, stateReset}
	events := []streamEvent{evOpened, evFINSent, evFINRecv, evReset}
	want := map[streamState][4]streamState{
		//              opened     fin-sent       fin-received    reset
		stateOpening:   {stateOpen, x, x, stateReset},
		stateOpen:      {x, stateLocalFIN, stateRemoteFIN, stateReset},
		stateLocalFIN:  {x, x, stateClosed, stateReset},
		stateRemoteFIN: {x, stateClosed, x, stateReset},
		stateClosed:    {x, x, x, x},
		stateReset:     {x, x, x, x},
	}
	for _, st := range states {
		for i, ev := range events {
			got, ok := next(st, ev)
			w := want[st][i]
			if w == x {
				if ok || got != st {
					t.Errorf("%v + %v = %v (applies %v), want ignored", st, ev, got, ok)
				}
				continue
			}
			if !ok || got != w {
				t.Errorf("%v + %v = %v (applies %v), want %v", st, ev, got, ok, w)
			}
		}
	}
}

// Each way through the table, driven through transition: only the first
// reset sends an RST, and nothing leaves reset or closed.
func TestStreamTransitions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events []streamEvent
		want   streamState
		rsts   int
	}{
		{"clean, we finish first", []streamEvent{evOpened, evFINSent, evFINRecv}, stateClosed, 0},
		{"clean, peer finishes first", []streamEvent{evOpened, evFINRecv, evFINSent}, stateClosed, 0},
		{"reset while opening, then opened", []streamEvent{evReset, evOpened}, stateReset, 1},
		{"reset, then a FIN that was queued", []streamEvent{evOpened, evReset, evFINSent, evFINRecv}, stateReset, 1},
		{"two resets", []streamEvent{evOpened, evReset, evReset}, stateReset, 1},
		{"reset after closed", []streamEvent{evOpened, evFINSent, evFINRecv, evReset}, stateClosed, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			control := make(chan Frame, 4)
			s := newStream(3, make(chan Frame, 4), control, testLog(), false)
			for _, ev := range tc.events {
				s.transition(ev, true)
			}
			if got := s.currentState(); got != tc.want {
				t.Fatalf("state %v, want %v", got, tc.want)
			}
			if len(control) != tc.rsts {
				t.Fatalf("%d RST frames queued, want %d", len(control), tc.rsts)
			}
			select {
			case <-s.aborted:
				if tc.want != stateReset {
					t.Fatal("aborted closed without a reset")
				}
			default:
				if tc.want == stateReset {
					t.Fatal("reset did not close aborted")
				}
			}
		})
	}
}
