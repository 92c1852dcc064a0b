package stages

import (
	"net"
	"sync"
	"sync/atomic"
)

// Openers run a server's stream opens (the frontend's dial) on
// goroutines kept from one open to the next, instead of one new
// goroutine per open.
//
// An open runs off the actor: a dial (dialer, resolver, access checks,
// connect) grows its goroutine's stack to several KiB, and the runtime
// shrinks a stack only when a collection finds it mostly unused; run on
// the actor, it would make every open stream keep a dial's stack (a
// server holding 1,000 idle streams kept 10.7 MB of stacks, 5.3 KB per
// goroutine). A stack grows by copying itself, with a walk of its
// frames: with one new goroutine per open, every dial paid for the
// copies. A kept opener has its grown stack ready for the next dial (a
// collection that finds it idle halves it, so an opener seldom grows
// again).
type openers struct {
	jobs chan *openJob // unbuffered: a job goes to an opener waiting for one, or to a new one
	idle atomic.Int32  // openers done with their last job (waiting, or about to)
	wg   sync.WaitGroup
	// started counts the openers started (tests).
	started atomic.Int64
}

// maxIdleOpeners bounds the openers kept waiting (about the dials a
// session has under way at once); one that would be beyond it ends.
const maxIdleOpeners = 32

type openJob struct {
	open func() (net.Conn, error)
	c    net.Conn
	err  error
	done chan struct{} // closed when c and err are set
}

func newOpeners() *openers { return &openers{jobs: make(chan *openJob)} }

// run opens on an opener and waits for the result; a panic in open is
// returned as a *PanicError (guardOpen), as on the actor.
func (o *openers) run(open func() (net.Conn, error)) (net.Conn, error) {
	j := &openJob{open: open, done: make(chan struct{})}
	select {
	case o.jobs <- j:
	default:
		o.wg.Add(1)
		o.started.Add(1)
		go o.serve(j)
	}
	<-j.done
	return j.c, j.err
}

// serve runs j, then the jobs handed to it while it waits, until enough
// openers wait or the openers close.
func (o *openers) serve(j *openJob) {
	defer o.wg.Done()
	for {
		j.c, j.err = guardOpen(j.open)
		close(j.done)
		if o.idle.Add(1) > maxIdleOpeners {
			o.idle.Add(-1)
			return
		}
		var ok bool
		j, ok = <-o.jobs
		o.idle.Add(-1)
		if !ok {
			return
		}
	}
}

// close ends the openers once no open can start any more (every actor
// has ended) and waits for them.
func (o *openers) close() {
	close(o.jobs)
	o.wg.Wait()
}

// wrap makes open run on an opener.
func (o *openers) wrap(open func() (net.Conn, error)) func() (net.Conn, error) {
	return func() (net.Conn, error) { return o.run(open) }
}
