package stages

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"usocks/wire"
)

// gaps are the times between consecutive cells.
func gaps(cells []time.Duration) []time.Duration {
	var g []time.Duration
	for i := 1; i < len(cells); i++ {
		g = append(g, cells[i]-cells[i-1])
	}
	return g
}

// TestLadderClimbsOnGrid: an episode starts on the bottom rung
// (Rate/2^Ladder); a burst that leaves more cells waiting than the rung
// sends in one Step raises the rate at the next grid point, not before,
// straight to the rung that sends the backlog within a Step; the rate
// never comes down within the episode, and the next episode starts at
// the bottom again.
func TestLadderClimbsOnGrid(t *testing.T) {
	const ms = time.Millisecond
	p := DefenceParams{Cell: DefaultCell, Idle: 50 * ms, Rate: 4000, Ladder: 2, Step: 20 * ms}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	s := testShaper(p)
	t0 := time.Unix(1000, 0)
	s.admit(t0, dataBatch(4*s.cellBody)) // 4 cells: below 1000/s × 20 ms
	before, _ := fadeRun(t, s, t0, t0.Add(30*ms))
	if s.pace != 1000 {
		t.Fatalf("rate %v after a small burst, want the bottom rung 1000", s.pace)
	}
	for i, g := range gaps(before) {
		if g != ms {
			t.Fatalf("gap %d before the burst: %v, want 1 ms (1000 cells/s)", i, g)
		}
	}
	at := t0.Add(31 * ms) // just after a slot, 9 ms before the grid point at 40 ms
	s.admit(at, dataBatch(190*s.cellBody))
	cells, _ := fadeRun(t, s, at, at.Add(10*time.Second))
	if s.phase != phaseIdle {
		t.Fatal("episode did not end")
	}
	rise := -1
	for i, g := range gaps(cells) {
		switch {
		case rise < 0 && g == 250*time.Microsecond:
			rise = i
			if when := at.Add(cells[i]).Sub(t0); when != 40*ms {
				t.Errorf("rate rose at %v, want the grid point at 40 ms", when)
			}
		case rise < 0 && g != ms:
			t.Fatalf("gap %d before the rise: %v, want 1 ms", i, g)
		case rise >= 0 && g != 250*time.Microsecond:
			t.Fatalf("gap %d after the rise: %v, want 250 µs: the rate came down", i, g)
		}
	}
	if rise < 0 {
		t.Fatal("the rate never rose")
	}
	// Data went out by ~88 ms, the episode's idle ended at 81 ms after
	// t0: dummies at 4000/s cover what is left of it, none at the bottom
	// rate.
	if s.pace != 4000 {
		t.Errorf("rate %v at the end of the episode, want 4000", s.pace)
	}
	s.admit(t0.Add(time.Second), dataBatch(s.cellBody))
	if s.pace != 1000 {
		t.Errorf("a new episode starts at %v cells/s, want the bottom rung", s.pace)
	}
}

// TestLadderSmallPageStaysLow: an episode whose backlog never exceeds
// what the bottom rung sends in a Step is paced at the bottom rung to its
// end, idle included: its pauses cost a quarter of what Rate would.
func TestLadderSmallPageStaysLow(t *testing.T) {
	const ms = time.Millisecond
	for _, ladder := range []int{0, 2} {
		p := DefenceParams{Cell: DefaultCell, Idle: 40 * ms, Rate: 4000, Ladder: ladder, Step: 20 * ms}
		s := testShaper(p)
		t0 := time.Unix(1000, 0)
		for k := range 3 { // three bursts of 10 cells, 30 ms apart
			s.admit(t0.Add(time.Duration(k)*30*ms), dataBatch(10*s.cellBody))
			fadeRun(t, s, t0.Add(time.Duration(k)*30*ms), t0.Add(time.Duration(k+1)*30*ms-ms/2))
		}
		cells, dummies := fadeRun(t, s, t0.Add(90*ms-ms/2), t0.Add(10*time.Second))
		_ = cells
		total := s.epCells
		// The episode lasts 60 ms of bursts + 40 ms idle ≈ 100 ms.
		want := int64(400) // 4000/s
		if ladder > 0 {
			want = 100 // 1000/s
		}
		if total < want-5 || total > want+5 {
			t.Errorf("ladder %d: episode of %d cells (%d dummies at the end), want about %d", ladder, total, dummies, want)
		}
	}
}

// TestRampIsTheSameForEveryEpisode: with a ramp and no step the rate
// rises one rung every Ramp from the episode's start whatever waits, so
// the times of an episode's cells do not depend on when its data came:
// an episode whose data all came at once and one with a burst later send
// their cells at the same instants while both are open.
func TestRampIsTheSameForEveryEpisode(t *testing.T) {
	const ms = time.Millisecond
	p := DefenceParams{Cell: DefaultCell, Idle: 100 * ms, Rate: 4000, Ladder: 2, Ramp: 20 * ms}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	quiet := sameCells(t, p, 25*ms, 60, 80*ms)
	// 20 ms at 1000/s, 20 ms at 2000/s, then 4000/s.
	want := map[time.Duration]time.Duration{0: ms, 25 * ms: ms / 2, 45 * ms: ms / 4}
	for i := 1; i < len(quiet); i++ {
		g := quiet[i] - quiet[i-1]
		for from, w := range want {
			if quiet[i-1] >= from && quiet[i-1] < from+15*ms && g != w {
				t.Errorf("gap after %v: %v, want %v", quiet[i-1], g, w)
			}
		}
	}
}

// episodeCells runs an episode of p that opens with 5 cells of data,
// with burst cells more at burstAt, and returns its cells' times up to
// until.
func episodeCells(t *testing.T, p DefenceParams, burstAt time.Duration, burst int, until time.Duration) []time.Duration {
	t.Helper()
	t0 := time.Unix(1000, 0)
	s := testShaper(p)
	s.admit(t0, dataBatch(5*s.cellBody))
	cells, _ := fadeRun(t, s, t0, t0.Add(burstAt))
	if burst > 0 {
		s.admit(t0.Add(burstAt), dataBatch(burst*s.cellBody))
	}
	more, _ := fadeRun(t, s, t0.Add(burstAt), t0.Add(until))
	for _, c := range more {
		cells = append(cells, burstAt+c)
	}
	return cells
}

// sameCells runs the episode of episodeCells without and with the
// burst, fails unless its cells go out at the same instants, and
// returns them.
func sameCells(t *testing.T, p DefenceParams, burstAt time.Duration, burst int, until time.Duration) []time.Duration {
	t.Helper()
	quiet, busy := episodeCells(t, p, burstAt, 0, until), episodeCells(t, p, burstAt, burst, until)
	if len(quiet) != len(busy) {
		t.Fatalf("%d cells in %v without the burst, %d with it", len(quiet), until, len(busy))
	}
	for i := range quiet {
		if quiet[i] != busy[i] {
			t.Fatalf("cell %d at %v without the burst, %v with it", i, quiet[i], busy[i])
		}
	}
	return quiet
}

// TestStandardRamps: the defence stage running the built-in standard
// policy paces an episode at rate/2^ladder for its first ramp, then one
// rung higher every ramp, in both roles, with nothing but one small
// write of data: the start of a page load is covered at a fraction of
// the rate.
func TestStandardRamps(t *testing.T) {
	for _, role := range []Role{Server, Client} {
		t.Run(fmt.Sprint(role), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := *DefencePolicy(wire.DefenceStandard, role)
				if p.Ladder == 0 || p.Ramp == 0 {
					t.Fatalf("role %d: standard has no ramp", role)
				}
				p.Idle = time.Duration(p.Ladder+2) * p.Ramp // one episode over the whole ramp
				in := make(chan Batch)
				out := make(chan Batch, BatchQueueLen) // as encrypt takes them: the stage reuses the arrays of batches sent before
				d := &Defence{Params: &p, In: in, Out: out, Rand: rand.New(rand.NewPCG(3, 4))}
				done := make(chan error)
				go func() { done <- d.Run(context.Background()) }()
				t0 := time.Now()
				in <- dataBatch(100)
				s := newShaper(&p, nil)
				perRung := make([]int64, p.Ladder+2)
				for stop := time.After(p.Idle); ; {
					select {
					case b := <-out:
						perRung[time.Since(t0)/p.Ramp] += cellsIn(s, b)
						continue
					case <-stop:
					}
					break
				}
				for k, got := range perRung[:p.Ladder+1] {
					want := p.Rate / float64(uint(1)<<(p.Ladder-k)) * p.Ramp.Seconds()
					if float64(got) < want-2 || float64(got) > want+2 {
						t.Errorf("role %d: %d cells in ramp %d, want %.0f", role, got, k, want)
					}
				}
				close(in)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}
