package stages

import (
	"testing"
	"time"
)

// TestFallIsATimetable: with a fall the paced rate holds Rate for Hold
// from the episode's start, then halves every Fall down to Floor, and
// stays there whatever waits: an episode whose data all came at once
// and one with a large burst after the fall began send their cells at
// the same instants while both are open.
func TestFallIsATimetable(t *testing.T) {
	const ms = time.Millisecond
	p := DefenceParams{Cell: DefaultCell, Idle: 300 * ms, Rate: 4000, Hold: 40 * ms, Fall: 20 * ms, Floor: 500}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	quiet := sameCells(t, p, 70*ms, 100, 200*ms)
	// 4000/s for 40 ms (160 cells), 2000/s about 20 ms after the hold,
	// 1000/s after 40, 500/s (the floor) from 100 ms on.
	for i := 1; i < len(quiet); i++ {
		at, g := quiet[i-1], quiet[i]-quiet[i-1]
		var want time.Duration
		switch {
		case at < 40*ms:
			want = ms / 4
		case at >= 100*ms:
			want = 2 * ms
		default:
			continue
		}
		if g != want {
			t.Fatalf("gap after %v: %v, want %v", at, g, want)
		}
	}
	if n := len(quiet); n < 295 || n > 325 {
		t.Errorf("%d cells in 200 ms, want about 160 + 101 + 50 (hold, fall, floor)", n)
	}
	t0 := time.Unix(1000, 0)
	s := testShaper(p)
	s.admit(t0, dataBatch(s.cellBody))
	fadeRun(t, s, t0, t0.Add(time.Second))
	if s.pace != 500 {
		t.Errorf("rate %v at the end of the episode, want the floor 500", s.pace)
	}
	s.admit(t0.Add(2*time.Second), dataBatch(s.cellBody))
	if s.pace != 4000 {
		t.Errorf("a new episode starts at %v cells/s, want 4000", s.pace)
	}
}

// TestFallValidate: a fall needs a floor within the rate, and
// excludes a climbing ladder and surges; hold and floor need a fall.
func TestFallValidate(t *testing.T) {
	const ms = time.Millisecond
	base := DefenceParams{Cell: DefaultCell, Idle: 80 * ms, Rate: 3000, Bucket: 1.25, TailRate: 3000}
	cases := []struct {
		name string
		mod  func(*DefenceParams)
		ok   bool
	}{
		{"fall", func(d *DefenceParams) { d.Hold, d.Fall, d.Floor = 100*ms, 50*ms, 750 }, true},
		{"fall after a ramp", func(d *DefenceParams) { d.Ladder, d.Ramp, d.Fall, d.Floor = 2, 40*ms, 50*ms, 750 }, true},
		{"no floor", func(d *DefenceParams) { d.Fall = 50 * ms }, false},
		{"floor above rate", func(d *DefenceParams) { d.Fall, d.Floor = 50*ms, 4000 }, false},
		{"no rate: nothing to fall", func(d *DefenceParams) { d.Rate, d.Bucket, d.Fall, d.Floor = 0, 0, 50*ms, 750 }, true},
		{"step", func(d *DefenceParams) { d.Ladder, d.Step, d.Fall, d.Floor = 2, 20*ms, 50*ms, 750 }, false},
		{"hold alone", func(d *DefenceParams) { d.Hold = 100 * ms }, false},
		{"floor alone", func(d *DefenceParams) { d.Floor = 750 }, false},
		{"negative", func(d *DefenceParams) { d.Fall, d.Floor, d.Hold = 50*ms, 750, -ms }, false},
	}
	for _, c := range cases {
		d := base
		c.mod(&d)
		if err := d.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", c.name, err, c.ok)
		}
	}
}
