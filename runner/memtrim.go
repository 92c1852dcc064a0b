package runner

import (
	"context"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync"
	"time"

	"usocks/stages"
)

// Memory after a burst. Go frees garbage only when a collection runs, and
// a collection runs only when the program allocates: once a burst of
// streams or a bulk transfer stops, what it left (dead buffers, pooled
// chunks, a heap goal twice the live heap) stays resident, and the runtime
// hands freed pages back to the OS only slowly (the stacks of goroutines
// that ended, too). A C tunnel's free() returns them at once. The trimmer
// watches the allocation rate and the goroutine count; the first quiet
// tick after a busy spell (much allocated, or many goroutines ended: a
// burst of streams closed) collects twice (pooled buffers go on the
// second), after the encrypt stages dropped the batch buffers they keep
// (stages.TrimKeptBuffers: grown to whole batches by a bulk transfer),
// and returns every free page to the OS (debug.FreeOSMemory), so
// that an idle process holds what its open streams need and no more. A
// busy process is never interrupted: under load the collector's pacing
// and the pools do their job.

const (
	// memTrimTick is how often the trimmer looks at the allocation rate.
	memTrimTick = 250 * time.Millisecond
	// memQuietAlloc: allocating less than this in a tick is quiet.
	memQuietAlloc = 256 << 10
	// memBusyAlloc: allocating this much since the last trim makes the
	// next quiet tick trim.
	memBusyAlloc = 4 << 20
	// memGoroutinesEnded: this many fewer goroutines than the most since
	// the last trim (two per stream) makes the next quiet tick trim.
	memGoroutinesEnded = 200
)

// memTrimmers counts the running trimmers: one per process is enough (in
// tests a process runs many clients and servers).
var memTrimmers struct {
	sync.Mutex
	n    int
	stop context.CancelFunc
	done chan struct{}
}

// startMemTrim starts the process's trimmer if none runs; the returned
// function stops it once the last user is done.
func startMemTrim() (stop func()) {
	memTrimmers.Lock()
	defer memTrimmers.Unlock()
	memTrimmers.n++
	if memTrimmers.n == 1 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		memTrimmers.stop, memTrimmers.done = cancel, done
		go func() {
			defer close(done)
			t := time.NewTicker(memTrimTick)
			defer t.Stop()
			trimLoop(ctx, t.C, readMem, trimNow)
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			memTrimmers.Lock()
			defer memTrimmers.Unlock()
			memTrimmers.n--
			if memTrimmers.n == 0 {
				memTrimmers.stop()
				<-memTrimmers.done
			}
		})
	}
}

// memSample is what the trimmer watches: bytes allocated on the heap
// since the process began, and goroutines now.
type memSample struct {
	allocs     uint64
	goroutines uint64
}

// trimLoop calls trim on the ticks trimState.due picks.
func trimLoop(ctx context.Context, tick <-chan time.Time, read func() memSample, trim func()) {
	st := newTrimState(read())
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		if st.due(read()) {
			trim()
			st = newTrimState(read()) // the trim's own allocations are not traffic
		}
	}
}

// trimState is what the trimmer remembers since its last trim.
type trimState struct {
	last  memSample
	since uint64 // allocated since the last trim
	peak  uint64 // the most goroutines since the last trim
}

func newTrimState(m memSample) *trimState { return &trimState{last: m, peak: m.goroutines} }

// due takes a tick's sample and says whether to trim now: on the first
// quiet tick (less than memQuietAlloc allocated since the last) after a
// busy spell, memBusyAlloc allocated or memGoroutinesEnded goroutines
// gone since the last trim.
func (t *trimState) due(now memSample) bool {
	delta := now.allocs - t.last.allocs
	t.last = now
	t.since += delta
	t.peak = max(t.peak, now.goroutines)
	ended := t.peak - min(t.peak, now.goroutines)
	return delta < memQuietAlloc && (t.since >= memBusyAlloc || ended >= memGoroutinesEnded)
}

var (
	memSamples = []rtmetrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/sched/goroutines:goroutines"}}
	memMu      sync.Mutex
)

// readMem samples the runtime's counters.
func readMem() memSample {
	memMu.Lock()
	defer memMu.Unlock()
	rtmetrics.Read(memSamples)
	var m memSample
	if v := memSamples[0].Value; v.Kind() == rtmetrics.KindUint64 {
		m.allocs = v.Uint64()
	}
	if v := memSamples[1].Value; v.Kind() == rtmetrics.KindUint64 {
		m.goroutines = v.Uint64()
	}
	return m
}

// trimNow drops the buffers the encrypt stages keep for their next
// batches, collects twice (sync.Pool keeps its items for one collection)
// and returns the free pages to the OS.
func trimNow() {
	stages.TrimKeptBuffers()
	runtime.GC()
	debug.FreeOSMemory()
}
