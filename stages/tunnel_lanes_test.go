package stages

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

func TestReorderRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		seqs []uint64 // numbers put, in arrival order
		max  int64
		want []uint64 // numbers delivered, in order
		dups uint64
		err  error // of the last put
	}{
		{"in order", []uint64{0, 1, 2}, 0, []uint64{0, 1, 2}, 0, nil},
		{"reversed", []uint64{2, 1, 0}, 0, []uint64{0, 1, 2}, 0, nil},
		{"gap waits", []uint64{0, 2, 3}, 0, []uint64{0}, 0, nil},
		{"duplicate delivered", []uint64{0, 1, 0, 1}, 0, []uint64{0, 1}, 2, nil},
		{"duplicate held", []uint64{3, 3, 2}, 0, nil, 1, nil},
		{"resent run fills gap", []uint64{0, 3, 4, 1, 2, 3, 4, 5}, 0, []uint64{0, 1, 2, 3, 4, 5}, 2, nil},
		{"beyond byte bound", []uint64{1, 2, 3}, 2 * (resendFrameCost + 64), nil, 0, ErrReorder},
		{"too far ahead", []uint64{maxReorderAhead + 1}, 0, nil, 0, ErrReorder},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := make(chan Frame, 16)
			r := &Reorder{Out: out, State: NewResumeState(), MaxBytes: tc.max}
			var err error
			for _, s := range tc.seqs {
				err = r.put(context.Background(), s, dataFrame(s, 64))
			}
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("last put: %v, want %v", err, tc.err)
			}
			close(out)
			var got []uint64
			for f := range out {
				got = append(got, frameNumber(t, f))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || r.Duplicates() != tc.dups {
				t.Fatalf("delivered %v dups %d, want %v dups %d", got, r.Duplicates(), tc.want, tc.dups)
			}
			if r.State.Received() != uint64(len(tc.want)) {
				t.Fatalf("received count %d, want %d", r.State.Received(), len(tc.want))
			}
			r.Release()
		})
	}
}

func TestLaneInRules(t *testing.T) {
	out := make(chan Frame, 4)
	st := NewResumeState()
	var seen []wire.Control
	in := &LaneIn{Reorder: &Reorder{Out: out, State: st}, Control: func(c wire.Control) { seen = append(seen, c) }}
	if err := in.deliver(context.Background(), dataFrame(0, 8)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("frame before SEQ: %v", err)
	}
	for _, f := range []wire.Frame{
		wire.ControlFrame(wire.Control{Type: wire.ControlLanes, Count: 4, Index: 1}),
		{Type: wire.FrameControl, Payload: []byte{99, 1, 2, 3}}, // unknown: ignored
		wire.ControlFrame(wire.Control{Type: wire.ControlSeq, Seq: 0}),
		{Type: wire.FrameAck, Payload: wire.AckPayload(nil, 7)},
		{Type: wire.FrameAck, Payload: wire.AckPayload(nil, 5)}, // older ACK of another lane
	} {
		if err := in.take(&f); err != nil {
			t.Fatalf("take %v: %v", f, err)
		}
	}
	if len(seen) != 1 || seen[0].Type != wire.ControlLanes || st.peerAck.Load() != 7 {
		t.Fatalf("control seen %v, ack %d", seen, st.peerAck.Load())
	}
	bad := wire.Frame{Type: wire.FrameControl, Payload: []byte{byte(wire.ControlSeq), 1}}
	if err := in.take(&bad); !errors.Is(err, ErrProtocol) || !errors.Is(err, wire.ErrBadFrame) {
		t.Fatalf("short SEQ: %v", err)
	}
	for i := range 2 {
		if err := in.deliver(context.Background(), dataFrame(uint64(i), 8)); err != nil {
			t.Fatal(err)
		}
	}
	if st.Received() != 2 {
		t.Fatalf("received %d", st.Received())
	}
	close(out)
	for f := range out {
		f.Release()
	}
}

// laneEnd is one side of a striped session without sockets: the mux's
// batches go into a Lanes stage; frames from the peer's lanes go through
// a Reorder to out (the demux).
type laneEnd struct {
	in  chan Batch
	st  *ResumeState
	l   *Lanes
	ro  *Reorder
	out chan Frame
}

func newLaneEnd(name string) *laneEnd {
	e := &laneEnd{in: make(chan Batch, BatchQueueLen), st: NewResumeState(), out: make(chan Frame, FrameQueueLen)}
	e.l = &Lanes{In: e.in, State: e.st, Limit: 256 << 10, Log: logrus.NewEntry(logrus.New()).WithField("end", name)}
	e.l.Init()
	e.ro = &Reorder{Out: e.out, State: e.st}
	return e
}

// pipeLane carries one direction of a lane: what the sender's Lanes
// hands it, frame by frame, into the receiver's LaneIn, the payloads
// copied as a socket would. It stops when the lane's input closes, ctx
// is done, or after cut frames (a lane lost: the rest is dropped).
func pipeLane(ctx context.Context, from <-chan Batch, to *LaneIn, cut int, carried *int) {
	n := 0
	for {
		b, ok, err := recv(ctx, from)
		if err != nil || !ok {
			return
		}
		for _, f := range b {
			wf := f.Frame
			wf.Payload = append([]byte(nil), wf.Payload...)
			if wf.Type == wire.FrameControl || wf.Type == wire.FrameAck {
				if to.take(&wf) != nil {
					return
				}
				continue
			}
			if cut > 0 && n >= cut {
				return
			}
			if to.deliver(ctx, Frame{Frame: wf}) != nil {
				return
			}
			n++
			*carried = n
		}
	}
}

// laneLink is one lane both ways between a and b.
type laneLink struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	carried [2]int
}

func linkLane(a, b *laneEnd, id int, cutAB int) *laneLink {
	ctx, cancel := context.WithCancel(context.Background())
	lk := &laneLink{cancel: cancel}
	ab, ba := make(chan Batch, BatchQueueLen), make(chan Batch, BatchQueueLen)
	if a.l.Add(ctx, id, ab, b.st.Received(), wire.Control{Type: wire.ControlLanes, Count: 4, Index: uint8(id % 4)}) != nil ||
		b.l.Add(ctx, id, ba, a.st.Received()) != nil {
		panic("add")
	}
	lk.wg.Add(2)
	go func() {
		defer lk.wg.Done()
		pipeLane(ctx, ab, &LaneIn{Reorder: b.ro}, cutAB, &lk.carried[0])
		if cutAB > 0 {
			cancel() // a lost lane is lost both ways
		}
	}()
	go func() { defer lk.wg.Done(); pipeLane(ctx, ba, &LaneIn{Reorder: a.ro}, 0, &lk.carried[1]) }()
	return lk
}

// TestLanesStripeLoseOne: two ends exchange numbered frames both ways
// over four lanes; one lane is lost after 150 frames, both ends remove
// it and add a replacement. Every frame arrives once and in order at
// each end, every lane carried some, and frames were sent again.
func TestLanesStripeLoseOne(t *testing.T) {
	const aFrames, bFrames = 3000, 1200
	a, b := newLaneEnd("a"), newLaneEnd("b")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stages sync.WaitGroup
	errs := make(chan error, 2)
	for _, e := range []*laneEnd{a, b} {
		stages.Add(1)
		go func() { defer stages.Done(); errs <- e.l.Run(ctx) }()
	}
	feed := func(e *laneEnd, n int) {
		for i := 0; i < n; i += 10 {
			var bt Batch
			for j := i; j < min(i+10, n); j++ {
				bt = append(bt, dataFrame(uint64(j), 1024))
			}
			e.in <- bt
		}
	}
	check := func(e *laneEnd, n int, res chan<- error) {
		for i := range n {
			f := <-e.out
			if got := frameNumber(t, f); got != uint64(i) {
				res <- fmt.Errorf("frame %d arrived as number %d", got, i)
				return
			}
		}
		res <- nil
	}
	links := make([]*laneLink, 0, 5)
	for id := range 4 {
		cut := 0
		if id == 2 {
			cut = 150
		}
		links = append(links, linkLane(a, b, id, cut))
	}
	res := make(chan error, 2)
	go check(b, aFrames, res)
	go check(a, bFrames, res)
	go feed(a, aFrames)
	go feed(b, bFrames)
	// The session's part: lane 2 ends; once both its directions have
	// stopped, both ends remove it and a replacement joins.
	links[2].wg.Wait()
	a.l.Remove(ctx, 2)
	b.l.Remove(ctx, 2)
	links = append(links, linkLane(a, b, 4, 0))
	for range 2 {
		if err := <-res; err != nil {
			t.Fatal(err)
		}
	}
	// The muxes close In (a session's end): each Lanes closes its lanes
	// once everything it sent is acknowledged.
	close(a.in)
	close(b.in)
	stages.Wait()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("Lanes.Run: %v", err)
		}
	}
	for _, lk := range links {
		lk.cancel()
		lk.wg.Wait()
	}
	for id, lk := range links {
		if lk.carried[0] == 0 {
			t.Errorf("lane %d carried nothing a→b", id)
		}
	}
	if a.l.Resent() == 0 {
		t.Errorf("nothing was sent again after lane 2 was lost")
	}
	t.Logf("carried a→b per lane %v %v %v %v %v; resent %d; duplicates dropped %d; most held out of order %d bytes",
		links[0].carried, links[1].carried, links[2].carried, links[3].carried, links[4].carried, a.l.Resent(), b.ro.Duplicates(), b.ro.MostHeld())
	a.ro.Release()
	b.ro.Release()
}
