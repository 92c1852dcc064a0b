package runner

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/wire"
)

// Lanes (SPEC-v2.md §7d): a resumable v2 session striped over several
// backend connections at once. Each lane is a link of its own (its own
// handshake, keys, record and backend stages, session_link.go); the
// session's Lanes stage hands each lane runs of numbered frames, and the
// session's Reorder puts what the lanes bring back in order for the
// demux. The client keeps `number` lanes: lane 0 is the session's first
// connection; once the server has answered its LANES message, the client
// dials the others, each a resumption of the session. A lane that is lost
// is redialled like a lost link (with the reconnect backoff, within
// resume_timeout), while the other lanes go on: nothing waits, and what
// the lost lane carried unacknowledged is sent again on the others. The
// server runs whatever lanes the client brings (at most twice the agreed
// count), and when the last one is lost the session is detached as any
// resumable session.

// errLaneReplaced ends a server lane when a new lane announces the same
// index and the old one has not ended within RetireTimeout (the client
// saw it die first). It is a lost link: errTakenOver.
var errLaneReplaced = fmt.Errorf("lane replaced by a new connection: %w", errTakenOver)

// laneSet is the lane state of a session that runs over lanes.
type laneSet struct {
	count   int
	stage   *stages.Lanes
	reorder *stages.Reorder
	// attach brings the server the lanes that join (the session's
	// resumption slot); nil on the client.
	attach <-chan *link

	mu      sync.Mutex
	nextID  int
	cuts    map[int]context.CancelCauseFunc // running lanes by id
	byIndex map[uint8]int                   // server: the lane that announced each index
	agreed  chan struct{}                   // client: the server answered LANES
	agree   sync.Once
	// Replaced counts lanes lost and replaced; Running the lanes now.
	Replaced, Running atomic.Int64
}

func newLaneSet(s *session, count int) *laneSet {
	ls := &laneSet{count: count, cuts: make(map[int]context.CancelCauseFunc), byIndex: make(map[uint8]int), agreed: make(chan struct{})}
	ls.stage = &stages.Lanes{In: s.batches, State: s.rs, Limit: s.p.resume.buffer, Total: s.p.resume.kept, Log: s.stage("lanes"),
		Probe: stages.LaneProbe(s.p.keepalive), Health: ls.health}
	ls.stage.Init()
	ls.reorder = &stages.Reorder{Out: s.frames, State: s.rs}
	return ls
}

// start registers a lane's cut; the lane gets its id.
func (ls *laneSet) start(lk *link, cut context.CancelCauseFunc) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.cuts[lk.lane] = cut
	ls.Running.Add(1)
}

func (ls *laneSet) stop(lk *link) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	delete(ls.cuts, lk.lane)
	if id, ok := ls.byIndex[lk.index]; ok && id == lk.lane {
		delete(ls.byIndex, lk.index)
	}
	ls.Running.Add(-1)
}

func (ls *laneSet) newID() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.nextID++
	return ls.nextID
}

// cutAll ends every lane (keepalive timeout: the peer is gone).
func (ls *laneSet) cutAll(cause error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, c := range ls.cuts {
		c(cause)
	}
}

// hello is what a lane says first: the client's LANES and HEALTH.
func (s *session) laneHello(lk *link) []wire.Control {
	if s.p.role != stages.Client {
		return nil
	}
	ls := s.ls
	return []wire.Control{{Type: wire.ControlLanes, Count: uint8(ls.count), Index: lk.index}, ls.health()}
}

// health is the HEALTH message of this side: a lane's hello, and the
// probe on an idle lane (§7d, lane liveness).
func (ls *laneSet) health() wire.Control {
	return wire.Control{Type: wire.ControlHealth, Up: uint8(min(ls.Running.Load(), 255)), Count: uint8(ls.count), Replaced: uint32(ls.Replaced.Load())}
}

// watchLane cuts lane lk when nothing arrives on it for the lane timeout
// while the session runs (§7d, lane liveness): what it carried goes on
// the other lanes and the client redials it, before the session's
// keepalive would cut every lane for the gap it leaves. The returned
// function stops the watch and waits for it.
func (s *session) watchLane(ctx context.Context, lk *link, in *stages.LaneIn, cut context.CancelCauseFunc) (stop func()) {
	timeout := stages.LaneTimeout(s.p.keepalive)
	if in == nil || timeout <= 0 {
		return func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := in.Watch(wctx, timeout, func() bool { return !s.ending() }); err != nil {
			s.p.log.WithError(err).WithField("lane", lk.index).Info("lane silent, cutting it")
			cut(err)
		}
	}()
	return func() { cancel(); <-done }
}

// laneIn is the lane part of a lane's decrypt stage (nil: no lanes).
func (s *session) laneIn(lk *link) *stages.LaneIn {
	if s.ls == nil {
		return nil
	}
	return &stages.LaneIn{Reorder: s.ls.reorder, Control: func(c wire.Control) { s.laneControl(lk, c) }}
}

// laneControl acts on a control message of lane lk (its decrypt's
// goroutine).
func (s *session) laneControl(lk *link, c wire.Control) {
	ls := s.ls
	switch c.Type {
	case wire.ControlLanes:
		if s.p.role == stages.Client {
			ls.agree.Do(func() { close(ls.agreed) })
			return
		}
		// The server: this connection is lane c.Index; a lane that
		// announced the same index before is a stale one.
		lk.index = c.Index
		ls.mu.Lock()
		old, had := ls.byIndex[c.Index]
		ls.byIndex[c.Index] = lk.lane
		cut := ls.cuts[old]
		ls.mu.Unlock()
		if had && old != lk.lane && cut != nil {
			// Retired as a rotation would (the client's GOING_AWAY may
			// still be on its way), and cut if it does not end soon.
			go ls.stage.Retire(s.hard, old, wire.GoingAwayRotation)
			time.AfterFunc(RetireTimeout, func() { cut(errLaneReplaced) })
		}
		_ = ls.stage.Say(s.hard, lk.lane, wire.Control{Type: wire.ControlLanes, Count: uint8(ls.count), Index: c.Index})
	case wire.ControlGoingAway:
		// The peer retires the lane: nothing more goes on it from here,
		// and the lane that replaces it does not replace it again.
		ls.mu.Lock()
		if id, ok := ls.byIndex[lk.index]; ok && id == lk.lane {
			delete(ls.byIndex, lk.index)
		}
		ls.mu.Unlock()
		go ls.stage.Retire(s.hard, lk.lane, wire.GoingAwayRotation)
	case wire.ControlHealth:
		s.p.log.WithFields(logrus.Fields{"lanes_up": c.Up, "lanes": c.Count, "lanes_replaced": c.Replaced}).Debug("peer's lane health")
	}
}

// runLanes runs the session's lanes until the session ends.
func (s *session) runLanes(first *link) {
	s.mu.Lock()
	s.cutLink = s.ls.cutAll
	s.mu.Unlock()
	if s.p.role == stages.Client {
		s.clientLanes(first)
	} else {
		s.serverLanes(first)
	}
	s.ls.reorder.Release()
}

// clientLanes keeps count lanes running, each redialled when lost.
func (s *session) clientLanes(first *link) {
	var wg sync.WaitGroup
	for i := range s.ls.count {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lk *link
			if i == 0 {
				lk = first
			} else {
				select {
				case <-s.ls.agreed:
				case <-s.closing:
					return
				}
			}
			var lost error
			for {
				if lk == nil {
					if lk = s.p.resume.next(s, lost); lk == nil {
						return
					}
					s.ls.Replaced.Add(1)
				}
				lk.index, lk.lane = uint8(i), s.ls.newID()
				lk.rotated = make(chan struct{})
				err, retired := s.runLane(lk, &wg)
				lk = nil
				switch {
				case retired:
					lost = errRotated
					continue
				case err == nil || s.ending():
					return
				case linkLost(err):
					s.p.log.WithError(err).WithField("lane", i).Info("lane lost, replacing it")
					lost = err
				default:
					s.fail(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// runLane runs a client lane until it ends, or until rotation retires
// it: the retired lane then finishes in the background (counted in wg),
// and the slot goes on to its replacement at once.
func (s *session) runLane(lk *link, wg *sync.WaitGroup) (err error, retired bool) {
	done := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		done <- s.runLink(lk)
	}()
	select {
	case err = <-done:
		return err, false
	case <-lk.rotated:
	}
	if s.p.rotate != nil {
		s.p.rotate.rotated(0) // the session does not pause
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := <-done; err != nil && !s.ending() && !linkLost(err) {
			s.fail(err)
		}
	}()
	return nil, true
}

// serverLanes runs the lanes the client brings; when none is left, the
// session waits detached for the next (resume_timeout).
func (s *session) serverLanes(first *link) {
	ended := make(chan error)
	active := 0
	start := func(lk *link) {
		if active >= 2*s.ls.count {
			_ = lk.conn.Close() // more lanes than agreed: refused
			return
		}
		active++
		lk.lane = s.ls.newID()
		go func() { ended <- s.runLink(lk) }()
	}
	start(first)
	var lost error
	for {
		if active == 0 {
			if s.ending() {
				return
			}
			lk := s.p.resume.next(s, lost)
			if lk == nil {
				return
			}
			start(lk)
			continue
		}
		var attach <-chan *link
		if !s.ending() {
			attach = s.ls.attach
		}
		select {
		case lk := <-attach:
			start(lk)
		case err := <-ended:
			active--
			switch {
			case err == nil || s.ending():
			case linkLost(err):
				lost = err
			default:
				s.fail(err)
			}
		}
	}
}

// lanes is the lane count a client asks for: backend.number with
// multi_tcp on protocol v2 and resumable sessions; 0 otherwise.
func (c *Common) lanes() int {
	if c.Protocol == "v2" && c.Backend.Type == "multi_tcp" && c.resumes() {
		return c.Backend.Number
	}
	return 0
}
