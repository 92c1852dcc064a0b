package stages

import "time"

// The end of a session's streams (SPEC-v2.md §7): see Demux.

// DefaultCloseGrace is Demux.CloseGrace's default: under the session's
// own grace time (3 s), which cuts everything.
const DefaultCloseGrace = 2 * time.Second

// endStreams starts the end of the streams (once): those whose receive
// side is complete go on delivering it, the others are reset. It returns
// the grace timer's channel.
func (d *Demux) endStreams() <-chan time.Time {
	if d.grace == nil {
		d.closed = true
		g := d.CloseGrace
		if g <= 0 {
			g = DefaultCloseGrace
		}
		d.grace = time.NewTimer(g)
		for _, s := range d.streams {
			s.endWithSession()
		}
	}
	return d.grace.C
}

// abortAll resets every stream still open (no RST: the session ends).
func (d *Demux) abortAll() {
	for _, s := range d.streams {
		s.abort(false)
	}
}

// shutdown waits for every actor to end. After a clean end the streams
// whose receive side is complete have until the grace time to deliver it;
// otherwise (and then) every stream still open is reset.
func (d *Demux) shutdown(clean bool) {
	var grace <-chan time.Time
	if clean {
		grace = d.endStreams()
	} else {
		d.abortAll()
	}
	if d.grace != nil {
		defer d.grace.Stop()
	}
	for d.live > 0 {
		select {
		case s := <-d.done:
			d.finish(s)
		case <-grace:
			grace = nil
			d.abortAll()
		}
	}
	d.openers.close() // no actor is left to start an open
}
