package stages

import (
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// watch, when set (tests, or a build with tag usocks_poison), checks the
// use of payload buffers: see bufLedger.
var watch atomic.Pointer[bufLedger]

// bufLedger turns misuse of pooled payload buffers into loud failures. A
// buffer released is filled with poisonByte and quarantined instead of
// going back to its pool, so that whoever still reads a freed buffer
// sees poison (every transfer through a test tunnel is SHA-256 checked)
// rather than another stream's bytes, and a second release of the same
// buffer is reported with the stacks of both. (The pooled flag of
// putBuf catches a second release only while no get came in between.)
type bufLedger struct {
	mu     sync.Mutex
	live   map[*payloadBuf]struct{} // taken while the ledger watched, not released
	freed  map[*payloadBuf]string   // quarantined buffer → stack of its release
	order  []*payloadBuf            // quarantine, oldest first
	limit  int                      // buffers kept in quarantine (older ones: left to the collector, still poisoned)
	strict bool                     // panic on a double release; else record it
	double []string                 // reports of double releases (not strict)
}

// poisonByte fills released buffers.
const poisonByte = 0xDB

func newBufLedger(limit int, strict bool) *bufLedger {
	return &bufLedger{live: make(map[*payloadBuf]struct{}), freed: make(map[*payloadBuf]string), limit: limit, strict: strict}
}

func (l *bufLedger) got(b *payloadBuf) {
	l.mu.Lock()
	delete(l.freed, b) // only a buffer never quarantined comes from a pool
	l.live[b] = struct{}{}
	l.mu.Unlock()
}

func (l *bufLedger) put(b *payloadBuf) {
	stack := string(debug.Stack())
	l.mu.Lock()
	defer l.mu.Unlock()
	if first, ok := l.freed[b]; ok {
		msg := fmt.Sprintf("payload buffer %p released twice; now at\n%s\nfirst at\n%s", b, stack, first)
		if l.strict {
			panic(msg)
		}
		l.double = append(l.double, msg)
		return
	}
	delete(l.live, b)
	for i := range b.B {
		b.B[i] = poisonByte
	}
	l.freed[b] = stack
	l.order = append(l.order, b)
	if len(l.order) > l.limit {
		delete(l.freed, l.order[0])
		l.order[0] = nil
		l.order = l.order[1:]
	}
}

// outstanding is how many buffers taken while the ledger watched are not
// released yet.
func (l *bufLedger) outstanding() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.live)
}

// doubles returns the double releases recorded so far.
func (l *bufLedger) doubles() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.double...)
}
