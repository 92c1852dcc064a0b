package runner

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestTrimDue feeds the trimmer's decision scripted samples, one per
// tick, starting a new state after each trim as the loop does, and checks
// on which ticks it trims.
func TestTrimDue(t *testing.T) {
	const M = 1 << 20
	for _, tc := range []struct {
		name string
		// per tick: allocated in the tick (bytes), goroutines after it
		allocs     []uint64
		goroutines []uint64
		want       []int // ticks (from 1) that trim
	}{
		{"idle never trims", []uint64{0, 0, 0, 0}, []uint64{10, 10, 10, 10}, nil},
		{"busy then quiet trims once", []uint64{3 * M, 3 * M, 0, 0, 0}, []uint64{10, 10, 10, 10, 10}, []int{3}},
		{"no trim while busy", []uint64{8 * M, 8 * M, 8 * M, 100 << 10}, []uint64{10, 10, 10, 10}, []int{4}},
		{"a little at a time below the bar", []uint64{200 << 10, 200 << 10, 200 << 10}, []uint64{10, 10, 10}, nil},
		{"a little at a time adds up", slices.Repeat([]uint64{200 << 10}, 21), slices.Repeat([]uint64{10}, 21), []int{21}},
		{"streams closed trims", []uint64{0, 0, 0, 0}, []uint64{2010, 2010, 10, 10}, []int{3}},
		{"closing while busy waits", []uint64{0, 5 * M, 0}, []uint64{2010, 10, 10}, []int{3}},
		{"few goroutines ended does not", []uint64{0, 0, 0}, []uint64{110, 10, 10}, nil},
		{"trim resets", []uint64{5 * M, 0, 0, 5 * M, 0}, []uint64{10, 10, 10, 10, 10}, []int{2, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var allocs uint64
			st := newTrimState(memSample{goroutines: 10})
			var got []int
			for i := range tc.allocs {
				allocs += tc.allocs[i]
				now := memSample{allocs: allocs, goroutines: tc.goroutines[i]}
				if st.due(now) {
					got = append(got, i+1)
					st = newTrimState(now)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("trimmed on ticks %v, want %v", got, tc.want)
			}
		})
	}
}

// TestTrimLoop: the loop trims on a due tick and stops with its context.
func TestTrimLoop(t *testing.T) {
	tick := make(chan time.Time)
	samples := []memSample{{goroutines: 10}, {allocs: 5 << 20, goroutines: 10}, {allocs: 5 << 20, goroutines: 10}, {allocs: 5 << 20, goroutines: 10}}
	n := 0
	read := func() memSample {
		m := samples[min(n, len(samples)-1)]
		n++
		return m
	}
	trims := 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		trimLoop(ctx, tick, read, func() { trims++ })
	}()
	tick <- time.Time{} // busy
	tick <- time.Time{} // quiet: trims
	tick <- time.Time{} // quiet, nothing new
	cancel()
	<-done
	if trims != 1 {
		t.Errorf("trims = %d, want 1", trims)
	}
}

// TestMemTrimStartStop: one trimmer per process however many users start
// it; it stops with the last.
func TestMemTrimStartStop(t *testing.T) {
	a, b := startMemTrim(), startMemTrim()
	memTrimmers.Lock()
	n := memTrimmers.n
	memTrimmers.Unlock()
	if n < 2 {
		t.Fatalf("users = %d", n)
	}
	a()
	a() // a second call does nothing
	b()
	if m := readMem(); m.allocs == 0 || m.goroutines == 0 {
		t.Errorf("runtime sample %+v", m)
	}
	trimNow()
}
