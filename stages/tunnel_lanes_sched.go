package stages

import (
	"context"
	"fmt"
	"reflect"
	"slices"

	"usocks/wire"
)

// The Lanes stage's scheduling: what batch is on offer, which lane takes
// it, and the session's requests (tunnel_lanes.go has the stage).

// offer builds the batch on offer if there is something to send and a
// lane to take it.
func (r *lanesRun) offer() {
	if r.pending != nil || r.up() == 0 {
		return
	}
	for len(r.retx) > 0 {
		x := &r.retx[0]
		x.from = max(x.from, r.buf.base)
		if x.from < x.to {
			break
		}
		r.retx = r.retx[1:]
	}
	from, lim, retx := r.next, r.buf.end(), false
	if len(r.retx) > 0 {
		from, lim, retx = r.retx[0].from, r.retx[0].to, true
	}
	if from == lim && !r.ackDue {
		return
	}
	b := make(Batch, 0, min(lim-from, maxBatchFrames)+2)
	to := from
	if from < lim {
		b = append(b, Frame{Frame: wire.ControlFrame(wire.Control{Type: wire.ControlSeq, Seq: from})})
		for bytes := 0; to < lim && len(b) <= maxBatchFrames && (bytes < maxBatchBytes || to == from); to++ {
			f := *r.buf.at(to)
			bytes += len(f.Payload)
			if f.buf = nil; retx {
				f.Payload = append([]byte(nil), f.Payload...)
			}
			b = append(b, f)
		}
	}
	if r.ackDue {
		r.pAckAt = r.l.State.received.Load()
		b = append(b, Frame{Frame: wire.Frame{Type: wire.FrameAck, Payload: wire.AckPayload(make([]byte, 0, wire.AckLen), r.pAckAt)}})
	}
	r.pending, r.pFrom, r.pTo, r.pRetx, r.pAck = b, from, to, retx, r.ackDue
}

// leastQueued is the lane with the fewest batches queued that has room;
// among equals, the next after the lane chosen last (round robin), so
// that idle lanes share the work too.
func (r *lanesRun) leastQueued() *lane {
	var best *lane
	at := 0
	for k := range r.lanes {
		i := (r.rr + k) % len(r.lanes)
		ln := r.lanes[i]
		if ln.out == nil || ln.retired || len(ln.out) >= cap(ln.out) {
			continue
		}
		if best == nil || len(ln.out) < len(best.out) {
			best, at = ln, i
		}
	}
	r.rr = at + 1
	return best
}

// commit notes that lane ln took the batch on offer.
func (r *lanesRun) commit(ln *lane) {
	if r.pTo > r.pFrom {
		r.runs = append(r.runs, run{ln.id, r.pFrom, r.pTo})
		if r.pRetx {
			r.retx[0].from = r.pTo
			r.l.resent.Add(r.pTo - r.pFrom)
		} else {
			r.next = r.pTo
		}
	}
	if r.pAck {
		r.ackDue = false
		r.ackedAt, r.ackedBytes = r.pAckAt, r.l.State.bytes.Load()
		if r.timerOn && !r.timer.Stop() {
			<-r.timer.C
		}
		r.timerOn = false
	}
	ln.busy = true
	r.pending = nil
}

// Fixed cases of wait's select.
const (
	caseCtx = iota
	caseCtl
	caseWake
	caseTimer
	caseIn
	caseProbe
	caseLanes
)

// wait blocks until something happens: a request, an ACK or received
// frames, the ACK timer, a batch from the mux (if take), or a lane that
// takes the batch on offer or its control frames.
func (r *lanesRun) wait(ctx context.Context, take <-chan Batch, in *<-chan Batch, st *ResumeState) error {
	cases := []reflect.SelectCase{
		caseCtx:   {Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		caseCtl:   {Dir: reflect.SelectRecv, Chan: reflect.ValueOf(r.l.ctl)},
		caseWake:  {Dir: reflect.SelectRecv, Chan: reflect.ValueOf(st.wake)},
		caseTimer: {Dir: reflect.SelectRecv, Chan: reflect.ValueOf(r.timer.C)},
		caseIn:    {Dir: reflect.SelectRecv},
		caseProbe: {Dir: reflect.SelectRecv},
	}
	if take != nil {
		cases[caseIn].Chan = reflect.ValueOf(take)
	}
	if r.probe != nil {
		cases[caseProbe].Chan = reflect.ValueOf(r.probe)
	}
	var who []*lane
	for _, ln := range r.lanes {
		switch {
		case ln.out == nil:
		case len(ln.say) > 0:
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectSend, Chan: reflect.ValueOf(ln.out), Send: reflect.ValueOf(ln.say)})
			who = append(who, ln)
		case r.pending != nil && !ln.retired:
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectSend, Chan: reflect.ValueOf(ln.out), Send: reflect.ValueOf(r.pending)})
			who = append(who, ln)
		}
	}
	i, v, ok := reflect.Select(cases)
	switch {
	case i == caseCtx:
		return ctx.Err()
	case i == caseCtl:
		r.handle(v.Interface().(laneReq))
	case i == caseWake:
	case i == caseTimer:
		r.timerOn = false
		if st.received.Load() > r.ackedAt {
			r.ackDue, r.pending = true, nil
		}
	case i == caseIn:
		var b Batch
		if ok {
			b = v.Interface().(Batch)
		}
		r.takeIn(b, ok, in)
	case i == caseProbe:
		r.probeIdle()
	default:
		ln := who[i-caseLanes]
		if len(ln.say) > 0 {
			ln.said()
		} else {
			r.commit(ln)
		}
	}
	return nil
}

// handle applies a request of the session.
func (r *lanesRun) handle(q laneReq) {
	var ln *lane
	at := slices.IndexFunc(r.lanes, func(x *lane) bool { return x.id == q.id })
	if at >= 0 {
		ln = r.lanes[at]
	}
	says := func() Batch {
		var b Batch
		for _, c := range q.say {
			b = append(b, Frame{Frame: wire.ControlFrame(c)})
		}
		return b
	}
	switch q.op {
	case laneAdd:
		if ln != nil {
			q.err <- fmt.Errorf("lane %d added twice", q.id)
			return
		}
		if q.peerRecv > r.buf.end() {
			q.err <- fmt.Errorf("%w: peer received %d frames, %d sent", ErrBadAck, q.peerRecv, r.buf.end())
			return
		}
		if q.peerRecv > r.buf.base {
			// The handshake's count is an acknowledgement.
			r.l.State.ackedMax(q.peerRecv)
		}
		r.lanes = append(r.lanes, &lane{id: q.id, out: q.out, say: says()})
		r.pending = nil
	case laneSay:
		if ln != nil && ln.out != nil {
			ln.say = append(ln.say, says()...)
		}
	case laneRetire:
		if ln != nil && ln.out != nil && !ln.retired {
			ln.retired = true
			ln.say = append(ln.say, says()...)
			r.pending = nil
		}
	case laneRemove:
		if ln != nil {
			ln.close()
			r.lanes = slices.Delete(r.lanes, at, at+1)
			r.requeue(q.id)
			r.pending = nil
		}
	}
	q.err <- nil
}

// requeue sends again what lane id was given and is not acknowledged.
func (r *lanesRun) requeue(id int) {
	kept := r.runs[:0]
	for _, x := range r.runs {
		if x.lane != id {
			kept = append(kept, x)
		} else if x.to > r.buf.base {
			r.retx = append(r.retx, run{-1, max(x.from, r.buf.base), x.to})
		}
	}
	clear(r.runs[len(kept):])
	r.runs = kept
	slices.SortFunc(r.retx, func(a, b run) int {
		switch {
		case a.from < b.from:
			return -1
		case a.from > b.from:
			return 1
		}
		return 0
	})
}
