package runner

import (
	"container/list"
	"context"
	"sync"
)

// waiting holds the connections that have not authenticated yet: in their
// handshake, or drained after a failed one. Waiting costs a goroutine and
// a small buffer, not a handshake slot, so slow senders cannot starve real
// clients: every connection is accepted and read at once, whatever the
// load. The pool only bounds their number; when it is full, the oldest
// waiting connection is ended early (its context is cancelled, which
// brings its deadline forward: it gets the usual FIN, sooner). Nothing is
// ever refused or reset because the server is busy.
type waiting struct {
	mu    sync.Mutex
	max   int
	conns list.List // of context.CancelFunc, oldest first
	// evicted counts connections ended early because the pool was full.
	evicted Counter
}

func newWaiting(max int) *waiting { return &waiting{max: max} }

// add registers a fresh connection and returns its context (cancelled when
// it is evicted) and the function that removes it from the pool (and
// cancels that context: use it only for the wait, not for the session).
func (w *waiting) add(ctx context.Context) (context.Context, func()) {
	cctx, cancel := context.WithCancel(ctx)
	w.mu.Lock()
	for w.conns.Len() >= w.max {
		oldest := w.conns.Front()
		w.conns.Remove(oldest)
		oldest.Value.(context.CancelFunc)()
		w.evicted.Add()
	}
	e := w.conns.PushBack(context.CancelFunc(cancel))
	w.mu.Unlock()
	var once sync.Once
	return cctx, func() {
		once.Do(func() {
			w.mu.Lock()
			w.conns.Remove(e) // a no-op if evicted already
			w.mu.Unlock()
			cancel()
		})
	}
}

// len is the number of waiting connections.
func (w *waiting) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conns.Len()
}
