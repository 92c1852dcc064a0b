package stages

import (
	"testing"
	"time"

	"usocks/wire"
)

// fadeRun drives a fading shaper from deadline to deadline and returns the
// time of every cell sent (data or dummy), relative to t0, until the
// episode ends or until stop.
func fadeRun(t *testing.T, s *shaper, t0, stop time.Time) (cells []time.Duration, dummies int64) {
	t.Helper()
	now := t0
	for i := 0; i < 100000 && !now.After(stop); i++ {
		b := s.due(now, nil)
		for j := range b {
			c := s.cellsOf(recordLen(&b[j]))
			if b[j].Type == wire.FramePad {
				dummies += c
			}
			for range c {
				cells = append(cells, now.Sub(t0))
			}
			b[j].Release()
		}
		if s.phase == phaseIdle && len(s.queue) == 0 {
			return cells, dummies
		}
		if now = s.deadline(now); now.IsZero() {
			t.Fatalf("open episode without a deadline")
		}
	}
	return cells, dummies
}

// TestFadeEndsAtBucket: an episode sends every slot at Rate until its
// cells reach the bucket above its data and Idle has passed since the last
// data went out; then the slots thin out, halving the rate every Fade,
// and the episode ends below Rate/16.
func TestFadeEndsAtBucket(t *testing.T) {
	const rate = 1000 // one slot per ms
	cases := []struct {
		name     string
		idle     time.Duration
		bucket   float64
		min      int
		data     int           // data cells, queued at t0
		fadeFrom time.Duration // the slot where the rate starts to fade
	}{
		// 20 data cells → bucket 32: full rate for cells 0..31.
		{"bucket", time.Millisecond, 2, 16, 20, 32 * time.Millisecond},
		// 3 cells → min 16.
		{"min cells", time.Millisecond, 2, 16, 3, 16 * time.Millisecond},
		// The bucket is reached at 32 ms but the hold lasts 60 ms after
		// the last data cell (19 ms).
		{"hold", 60 * time.Millisecond, 2, 16, 20, 79 * time.Millisecond},
		// No bucket: the fade starts once the hold is over.
		{"no bucket", 10 * time.Millisecond, 0, 0, 5, 14 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := DefenceParams{Cell: DefaultCell, Idle: c.idle, Rate: rate, Bucket: c.bucket, MinCells: c.min, Fade: 8 * time.Millisecond}
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			s := testShaper(p)
			t0 := time.Unix(1000, 0)
			s.admit(t0, Batch{dataBatch(c.data * s.cellBody)[0]})
			cells, dummies := fadeRun(t, s, t0, t0.Add(10*time.Second))
			if s.phase != phaseIdle {
				t.Fatalf("episode still in phase %d", s.phase)
			}
			if int64(len(cells)) != int64(c.data)+dummies {
				t.Fatalf("%d cells, %d data + %d dummies", len(cells), c.data, dummies)
			}
			if got := s.fadeAt.Sub(t0); got != c.fadeFrom {
				t.Errorf("rate fades from %v, want %v", got, c.fadeFrom)
			}
			full := int(c.fadeFrom / time.Millisecond)
			for i, at := range cells[:full] {
				if at != time.Duration(i)*time.Millisecond {
					t.Fatalf("cell %d at %v: not at full rate", i, at)
				}
			}
			// The fade: gaps grow, the rate halving every 8 ms, down to
			// 1/16 of the rate: about 1000·8 ms/ln 2·15/16 ≈ 11 cells in
			// about 32 ms.
			fade := cells[full:]
			if n := len(fade) - 1; n < 8 || n > 14 {
				t.Errorf("%d cells in the fade, want about 11", n)
			}
			if d := fade[len(fade)-1] - fade[0]; d < 20*time.Millisecond || d > 40*time.Millisecond {
				t.Errorf("fade lasted %v, want about 32 ms", d)
			}
			for i := 2; i < len(fade); i++ {
				if fade[i]-fade[i-1] < fade[i-1]-fade[i-2] {
					t.Errorf("fade gap %d shrank: %v after %v", i, fade[i]-fade[i-1], fade[i-1]-fade[i-2])
				}
			}
			if !s.deadline(t0.Add(time.Minute)).IsZero() {
				t.Error("an ended episode still wants wake-ups")
			}
		})
	}
}

// TestFadeDataRestoresRate: data that arrives while the rate fades goes
// out at once and brings back the full rate, up to the bucket above the
// episode's new size.
func TestFadeDataRestoresRate(t *testing.T) {
	p := DefenceParams{Cell: DefaultCell, Idle: time.Millisecond, Rate: 1000, Bucket: 2, MinCells: 16, Fade: 8 * time.Millisecond}
	s := testShaper(p)
	t0 := time.Unix(1000, 0)
	s.admit(t0, Batch{dataBatch(10 * s.cellBody)[0]})
	fadeRun(t, s, t0, t0.Add(24*time.Millisecond)) // 16 full-rate cells, then fading
	if s.fadeAt.IsZero() || s.phase != phaseOpen {
		t.Fatalf("not fading at 24 ms (phase %d)", s.phase)
	}
	at := t0.Add(25 * time.Millisecond)
	s.admit(at, Batch{dataBatch(s.cellBody)[0]})
	if dl := s.deadline(at); !dl.Equal(at) {
		t.Fatalf("data waits until %v", dl.Sub(at))
	}
	before := s.epCells
	cells, _ := fadeRun(t, s, at, at.Add(10*time.Second))
	// The episode had 16 + a few fade cells; with one more data cell it
	// fills the bucket of 32 at full rate, then fades again.
	full := 0
	for i, c := range cells {
		if c != time.Duration(i)*time.Millisecond || !at.Add(c).Before(s.fadeAt) {
			break
		}
		full++
	}
	if got := before + int64(full); got != 32 {
		t.Fatalf("full rate up to %d cells, want the bucket of 32", got)
	}
	if s.phase != phaseIdle {
		t.Fatal("episode did not end")
	}
}

// TestPeerBulkEndsShaping: once an episode has received MaxEpisodeIn
// bytes of data, this side's pacing stops: what waits goes out at once and
// no more dummies follow, however long the peer's transfer lasts.
func TestPeerBulkEndsShaping(t *testing.T) {
	cases := []struct {
		name string
		fade time.Duration
	}{{"constant rate", 0}, {"fading rate", 20 * time.Millisecond}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := DefenceParams{Cell: DefaultCell, Idle: 100 * time.Millisecond, Rate: 300, Bucket: 1.25, MinCells: 16, TailRate: 300, Fade: c.fade, MaxEpisodeIn: 1 << 20}
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			s := testShaper(p)
			t0 := time.Unix(1000, 0)
			s.received(t0, 1<<19, 1, 1<<19) // the download starts: an episode
			s.admit(t0, Batch{dataBatch(3 * s.cellBody)[0]})
			if n := cellsIn(s, s.due(t0, nil)); n != 1 || !s.pacing() {
				t.Fatalf("paced episode sent %d cells in its first slot", n)
			}
			now := t0.Add(time.Millisecond)
			s.received(now, 2<<20, 2, (1<<20)+1) // past MaxEpisodeIn
			if s.pacing() {
				t.Fatal("still pacing during the peer's bulk transfer")
			}
			if b := s.due(now, nil); cellsIn(s, b) != 2 || b[0].Type != wire.FrameStream {
				t.Fatalf("the queued data did not go out at once: %d cells", cellsIn(s, b))
			}
			for i := 1; i <= 1000; i++ {
				now = t0.Add(time.Duration(i) * time.Millisecond)
				s.received(now, int64(2<<20+i<<20), int64(2+i), int64(1<<20+i<<20))
				if b := s.due(now, nil); len(b) != 0 {
					t.Fatalf("%d frames at %v into the peer's bulk transfer", len(b), now.Sub(t0))
				}
			}
			if s.dummy != 0 {
				t.Fatalf("%d dummy bytes", s.dummy)
			}
		})
	}
}
