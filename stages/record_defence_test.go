package stages

import (
	"context"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"usocks/wire"
)

func testShaper(p DefenceParams) *shaper {
	return newShaper(&p, rand.New(rand.NewPCG(1, 2)))
}

func dataBatch(n int) Batch {
	return Batch{{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: make([]byte, n)}}}
}

// cellsIn is the number of cells b takes on the wire.
func cellsIn(s *shaper, b Batch) int64 {
	n := 0
	for i := range b {
		n += recordLen(&b[i])
	}
	return s.cellsOf(n)
}

func TestBucketUp(t *testing.T) {
	s := testShaper(DefenceParams{Cell: DefaultCell, Bucket: 1.5, MinCells: 16})
	cases := []struct{ in, want int64 }{
		{0, 16}, {1, 16}, {16, 16}, {17, 24}, {24, 24}, {25, 36}, {37, 54}, {1000, 1395},
	}
	for _, c := range cases {
		if got := s.bucketUp(c.in); got != c.want {
			t.Errorf("bucketUp(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

// TestEpisodeFillsItsBucket: data opens an episode; Idle later the tail
// sends dummies at TailRate until the episode's cells reach the bucket,
// then the shaper is idle and sends nothing more.
func TestEpisodeFillsItsBucket(t *testing.T) {
	p := DefenceParams{Cell: DefaultCell, Idle: 100 * time.Millisecond, Bucket: 2, MinCells: 8, TailRate: 1000}
	s := testShaper(p)
	t0 := time.Unix(1000, 0)
	out := s.admit(t0, dataBatch(5000)) // 4 cells
	if len(out) != 1 || s.phase != phaseOpen || s.epCells != 4 {
		t.Fatalf("after data: phase %d, cells %d", s.phase, s.epCells)
	}
	if b := s.due(t0.Add(50*time.Millisecond), nil); len(b) != 0 {
		t.Fatalf("dummies before the episode went idle: %d", len(b))
	}
	if dl := s.deadline(t0); !dl.Equal(t0.Add(p.Idle)) {
		t.Fatalf("deadline %v, want idle end", dl.Sub(t0))
	}
	var dummies int64
	now, last := t0.Add(p.Idle), time.Time{}
	for i := 0; i < 100 && s.phase != phaseIdle; i++ {
		b := s.due(now, nil)
		last = now
		for _, f := range b {
			if f.Type != wire.FramePad {
				t.Fatalf("tail sent a %v frame", f.Type)
			}
		}
		dummies += cellsIn(s, b)
		now = s.deadline(now)
		if now.IsZero() {
			break
		}
	}
	if s.phase != phaseIdle || 4+dummies != 8 {
		t.Fatalf("episode ended in phase %d with %d cells, want 8", s.phase, 4+dummies)
	}
	if el := last.Sub(t0.Add(p.Idle)); el < 3*time.Millisecond || el > 5*time.Millisecond {
		t.Errorf("4 tail cells at 1000/s took %v", el)
	}
	if !s.deadline(now).IsZero() {
		t.Error("an idle shaper still wants a wake-up")
	}
}

// TestDataDuringTailReopens: data in the tail goes back to open and the
// bucket is computed again from the larger episode.
func TestDataDuringTailReopens(t *testing.T) {
	s := testShaper(DefenceParams{Cell: DefaultCell, Idle: 100 * time.Millisecond, Bucket: 2, MinCells: 8, TailRate: 10})
	t0 := time.Unix(1000, 0)
	s.admit(t0, dataBatch(100))
	s.due(t0.Add(100*time.Millisecond), nil)
	if s.phase != phaseTail {
		t.Fatalf("phase %d, want tail", s.phase)
	}
	s.admit(t0.Add(150*time.Millisecond), dataBatch(16000))
	if s.phase != phaseOpen {
		t.Fatalf("data in the tail left phase %d", s.phase)
	}
	s.due(t0.Add(250*time.Millisecond), nil)
	if s.phase != phaseTail || s.target != 16 {
		t.Fatalf("phase %d target %d (episode %d cells), want tail to 16", s.phase, s.target, s.epCells)
	}
}

// TestDummiesAreNotActivity: PAD frames and keepalives neither open nor
// prolong an episode; received dummies do not either, but they are tied.
func TestDummiesAreNotActivity(t *testing.T) {
	s := testShaper(DefenceParams{Cell: DefaultCell, Idle: 100 * time.Millisecond, Tie: 4})
	t0 := time.Unix(1000, 0)
	s.admit(t0, Batch{{Frame: wire.Frame{Type: wire.FramePing}}})
	if s.phase != phaseIdle {
		t.Fatal("a PING opened an episode")
	}
	// 20 cells arrive, none of them data: 5 cells are owed, less the
	// PING's cell already sent.
	s.received(t0, 20*DefaultCell, 0, 0)
	if s.phase != phaseIdle {
		t.Fatal("received dummies opened an episode")
	}
	if got := cellsIn(s, s.due(t0, nil)); got != 4 {
		t.Fatalf("tie sent %d cells for 20 received, want 4", got)
	}
	s.received(t0, 24*DefaultCell, 1, 100)
	if s.phase != phaseOpen {
		t.Fatal("received data did not open an episode")
	}
}

// TestBudgetBoundsDummies: the budget is a token bucket of BudgetFree
// bytes, full at the start, refilled by Budget × the data sent: the first
// episode's tail spends the burst and stops, the next one gets only what
// its data and the data since earned, and the cells held back are counted.
func TestBudgetBoundsDummies(t *testing.T) {
	s := testShaper(DefenceParams{Cell: DefaultCell, Idle: 10 * time.Millisecond, Bucket: 100, MinCells: 1000, TailRate: 1e6,
		Budget: 0.5, BudgetFree: 8 * DefaultCell})
	t0 := time.Unix(1000, 0)
	tail := func(at time.Time) (dummies int64) {
		now := at.Add(10 * time.Millisecond)
		for i := 0; i < 50 && s.phase != phaseIdle; i++ {
			dummies += cellsIn(s, s.due(now, nil))
			now = now.Add(time.Millisecond)
		}
		if s.phase != phaseIdle {
			t.Fatalf("episode still in phase %d with the budget spent", s.phase)
		}
		return dummies
	}
	// The bucket starts full: 11 cells of data earn nothing above it.
	s.admit(t0, dataBatch(10*DefaultCell))
	if got := tail(t0); got != 8 {
		t.Fatalf("first episode sent %d dummy cells, want the burst of 8", got)
	}
	if s.why.Denied == 0 {
		t.Error("cells held back by the budget were not counted")
	}
	// The 11 cells came while the bucket was full; the next 9 earn 4.5
	// cells, and the next episode spends the 4 whole ones.
	t1 := t0.Add(time.Second)
	s.admit(t1, dataBatch(8*DefaultCell))
	if got := tail(t1); got != 4 {
		t.Fatalf("second episode sent %d dummy cells, want the 4 earned since", got)
	}
	// A long transfer refills the bucket only up to BudgetFree.
	t2 := t1.Add(time.Second)
	for i := range 100 {
		s.admit(t2.Add(time.Duration(i)*time.Microsecond), dataBatch(10*DefaultCell))
	}
	if got := tail(t2.Add(time.Millisecond)); got != 8 {
		t.Fatalf("after 1,100 cells of data the tail sent %d dummy cells, want the cap of 8", got)
	}
}

// TestBulkEpisodeIsNotPadded: past MaxEpisode an episode gets no tail.
func TestBulkEpisodeIsNotPadded(t *testing.T) {
	s := testShaper(DefenceParams{Cell: DefaultCell, Idle: 10 * time.Millisecond, Bucket: 2, MinCells: 8, TailRate: 1000, MaxEpisode: 100 << 10})
	t0 := time.Unix(1000, 0)
	for i := range 10 {
		s.admit(t0.Add(time.Duration(i)*time.Millisecond), dataBatch(16<<10))
	}
	if !s.bulk {
		t.Fatal("160 KiB episode is not bulk")
	}
	if b := s.due(t0.Add(time.Second), nil); len(b) != 0 || s.phase != phaseIdle {
		t.Fatalf("bulk episode got %d dummy frames, phase %d", len(b), s.phase)
	}
}

// TestPacingSplitsIntoCells: with a Rate every record is one cell, sent
// one per slot; a 16 KiB frame becomes pieces whose flags and buffer sit on
// the right piece; empty slots carry dummies while the episode is open.
func TestPacingSplitsIntoCells(t *testing.T) {
	s := testShaper(DefenceParams{Cell: DefaultCell, Idle: time.Second, Rate: 1000})
	t0 := time.Unix(1000, 0)
	buf := getBuf(payloadBufSize)
	f := Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagSYN | wire.FlagDAT | wire.FlagFIN, Stream: 3, Payload: buf.B[:16<<10]}, buf: buf}
	if out := s.admit(t0, Batch{f}); out != nil {
		t.Fatal("paced data went out at once")
	}
	want := (16<<10 + s.cellBody - 1) / s.cellBody
	if len(s.queue) != want || s.queued != want {
		t.Fatalf("queued %d frames (%d cells), want %d", len(s.queue), s.queued, want)
	}
	var got Batch
	now := t0
	for len(s.queue) > 0 {
		b := s.due(now, nil)
		for i := range b {
			if recordLen(&b[i]) != DefaultCell {
				t.Fatalf("paced record of %d bytes", recordLen(&b[i]))
			}
		}
		got = append(got, b...)
		now = s.deadline(now)
	}
	if el := now.Sub(t0); el < time.Duration(want-1)*time.Millisecond {
		t.Fatalf("%d cells at 1000/s went out in %v", want, el)
	}
	total := 0
	for i, p := range got {
		total += len(p.Payload)
		first, last := i == 0, i == len(got)-1
		if p.Flags.Has(wire.FlagSYN) != first || p.Flags.Has(wire.FlagFIN) != last || (p.buf != nil) != last {
			t.Fatalf("piece %d: flags %v, owns buffer %v", i, p.Flags, p.buf != nil)
		}
	}
	if total != 16<<10 {
		t.Fatalf("pieces carry %d bytes", total)
	}
	got[len(got)-1].Release()
	if b := s.due(now.Add(5*time.Millisecond), nil); cellsIn(s, b) < 4 {
		t.Fatalf("open episode with an empty queue sent %d dummy cells in 5 slots", cellsIn(s, b))
	}
}

// TestEncryptAlignsBatchesToCells: every sealed batch is whole cells.
func TestEncryptAlignsBatchesToCells(t *testing.T) {
	var key [wire.KeySize]byte
	a, err := wire.NewAEAD(wire.CipherChaCha20Poly1305, &key)
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan Batch, 1)
	out := make(chan Sealed, 8)
	e := &Encrypt{Sealer: wire.NewSealer(a), Cell: DefaultCell, In: in, Out: out}
	go func() {
		for _, n := range []int{0, 1, 1407, 1408, 1409, 5000, 16384} {
			in <- append(dataBatch(n), Frame{Frame: wire.Frame{Type: wire.FrameWindow, Stream: 1, Payload: make([]byte, 4)}})
		}
		close(in)
	}()
	if err := e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for s := range out {
		if len(s.B)%DefaultCell != 0 {
			t.Errorf("sealed batch of %d bytes is not whole cells", len(s.B))
		}
	}
}

// TestDefenceStageRuns drives the stage with a fake clock (synctest): a
// request, then silence; the stage sends the data at once, then its tail,
// and stops when In closes.
func TestDefenceStageRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := DefencePolicy(wire.DefenceStandard, Server)
		in := make(chan Batch)
		out := make(chan Batch, 4)
		ev := NewDefenceEvents()
		d := &Defence{Params: p, In: in, Out: out, Events: ev, Rand: rand.New(rand.NewPCG(3, 4)), Stats: new(Stats)}
		done := make(chan error)
		go func() { done <- d.Run(context.Background()) }()
		in <- dataBatch(3000)
		first := <-out
		if first[0].Type != wire.FrameStream {
			t.Fatalf("first out: %v", first[0].Type)
		}
		var cells int64
		s := newShaper(p, nil)
		cells += cellsIn(s, first)
		timeout := time.After(10 * time.Second)
	loop:
		for {
			select {
			case b := <-out:
				cells += cellsIn(s, b)
			case <-timeout:
				break loop
			}
		}
		if want := s.bucketUp(cells); cells != want || d.Stats.DefenceDummy.Load() == 0 {
			t.Fatalf("episode sent %d cells, bucket %d, dummies %d B", cells, want, d.Stats.DefenceDummy.Load())
		}
		close(in)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestSurgeDecays: with a decaying rate an episode's slots thin out and
// stop; data queued faster than the current rate sends starts a new surge.
func TestSurgeDecays(t *testing.T) {
	p := DefenceParams{Cell: DefaultCell, Idle: 10 * time.Second, Rate: 1000, Decay: 100 * time.Millisecond, Surge: 20 * time.Millisecond}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	s := testShaper(p)
	t0 := time.Unix(1000, 0)
	s.admit(t0, dataBatch(100))
	count := func(from, to time.Time) int64 {
		var n int64
		for now := from; now.Before(to); now = now.Add(time.Millisecond) {
			n += cellsIn(s, s.due(now, nil))
		}
		return n
	}
	first := count(t0, t0.Add(100*time.Millisecond))
	second := count(t0.Add(100*time.Millisecond), t0.Add(200*time.Millisecond))
	late := count(t0.Add(500*time.Millisecond), t0.Add(900*time.Millisecond))
	// ∫ 1000·2^(−t/100ms) over the first 100 ms is ≈ 72 cells, the next ≈ 36.
	if first < 60 || first > 85 || second < 28 || second > 45 {
		t.Fatalf("cells in the first two half-lives: %d, %d", first, second)
	}
	if late != 0 {
		t.Fatalf("%d cells after the surge fell below its floor", late)
	}
	if !s.deadline(t0.Add(time.Second)).IsZero() && s.deadline(t0.Add(time.Second)).Before(t0.Add(time.Second)) {
		t.Fatal("a finished surge still wants wake-ups")
	}
	// 40 cells at once at t=1 s: the surge is over, so a new one starts.
	now := t0.Add(time.Second)
	s.admit(now, Batch{dataBatch(40 * s.cellBody)[0]})
	if got := count(now, now.Add(5*time.Millisecond)); got < 4 {
		t.Fatalf("a new surge sent %d cells in its first 5 ms", got)
	}
}

// TestPacingKeepsSYNTargetWhole: a SYN whose payload is a target (no DAT)
// is never split, even with cells smaller than the target.
func TestPacingKeepsSYNTargetWhole(t *testing.T) {
	s := testShaper(DefenceParams{Cell: 128, Idle: time.Second, Rate: 1000})
	t0 := time.Unix(1000, 0)
	f := Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagSYN, Stream: 3, Payload: make([]byte, 300)}}
	s.admit(t0, Batch{f})
	if len(s.queue) != 1 || s.queue[0].Flags != wire.FlagSYN || len(s.queue[0].Payload) != 300 {
		t.Fatalf("queued %d frames; first %v with %d bytes", len(s.queue), s.queue[0].Flags, len(s.queue[0].Payload))
	}
	if n := recordLen(&s.queue[0]); n%128 != 0 {
		t.Fatalf("the SYN's record is %d bytes, not whole cells", n)
	}
}

// TestPacingPacksSmallFrames: small frames queued together share a cell
// (one slot) as long as they fit in its padding; the cell stays whole,
// the frames keep their order, and data that does not fit whole starts
// in what is left: its first piece fills the cell, the rest takes the
// next slot.
func TestPacingPacksSmallFrames(t *testing.T) {
	s := testShaper(DefenceParams{Cell: DefaultCell, Idle: time.Second, Rate: 300})
	t0 := time.Unix(1000, 0)
	s.admit(t0, dataBatch(10))
	if b := s.due(t0, nil); len(b) != 1 || cellsIn(s, b) != 1 {
		t.Fatalf("the episode's first slot sent %d frames", len(b))
	}
	stream := func(id uint16, fl wire.Flags, n int) Frame {
		return Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: fl, Stream: id, Payload: make([]byte, n)}}
	}
	small := Batch{stream(1, wire.FlagFIN, 0), stream(2, wire.FlagSYN, 7), stream(2, wire.FlagDAT, 51)}
	big := stream(2, wire.FlagDAT, s.cellBody-100) // does not fit whole in what the three leave
	now := t0.Add(time.Millisecond)
	s.admit(now, append(small, big))
	if s.queued != 2 {
		t.Fatalf("%d cells queued, want 2", s.queued)
	}
	slot := s.deadline(now)
	b := s.due(slot, nil)
	if len(b) != len(small)+1 {
		t.Fatalf("one slot sent %d frames, want the %d small ones and big's first piece", len(b), len(small))
	}
	total := 0
	for i := range b {
		if i < len(small) && (b[i].Stream != small[i].Stream || b[i].Flags != small[i].Flags || len(b[i].Payload) != len(small[i].Payload)) {
			t.Fatalf("frame %d is %v, want %v", i, b[i].Frame.String(), small[i].Frame.String())
		}
		total += recordLen(&b[i])
	}
	if total != DefaultCell || b[3].padLen != 0 {
		t.Fatalf("the shared cell's records take %d bytes (last padded %d), want %d, none padding", total, b[3].padLen, DefaultCell)
	}
	head := len(b[3].Payload)
	b = s.due(s.deadline(slot), nil)
	if len(b) != 1 || head+len(b[0].Payload) != len(big.Payload) || recordLen(&b[0]) != DefaultCell {
		t.Fatalf("the next slot sent %d frames", len(b))
	}
	if s.queued != 0 || len(s.queue) != 0 || len(s.qcells) != 0 {
		t.Fatalf("queue left: %d cells, %d frames", s.queued, len(s.queue))
	}
}

// TestPacingFillsCellsWithData: data frames queued back to back fill
// their cells: a run of frames takes the cells its bytes need, not one
// partial cell per frame, and with FlagMORE the pieces join again into
// the frames they were, byte for byte.
func TestPacingFillsCellsWithData(t *testing.T) {
	s := testShaper(DefenceParams{Cell: DefaultCell, Idle: time.Second, Rate: 1000})
	s.markPieces = true
	t0 := time.Unix(1000, 0)
	sizes := []int{3000, 5000, 700, 16384, 90, 4000}
	var in Batch
	rec := 0
	for i, n := range sizes {
		f := dataBatch(n)[0]
		for j := range f.Payload {
			f.Payload[j] = byte(i*31 + j)
		}
		in = append(in, f)
	}
	s.admit(t0, in)
	var out Batch
	for now := t0; len(s.queue) > 0; now = s.deadline(now) {
		out = append(out, s.due(now, nil)...)
	}
	for i := range out {
		rec += recordLen(&out[i]) - out[i].padLen
	}
	// Each piece costs its record and frame header; the cells are full
	// but for the last one (24 cells if each frame began a cell).
	if cells := s.realBytes / DefaultCell; cells != s.cellsOf(rec) || cells >= 24 {
		t.Fatalf("%d bytes of records in %d cells: cells not full", rec, cells)
	}
	var j joiner
	got := 0
	for i := range out {
		wf := out[i].Frame
		f, ok, err := j.add(wf, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			continue
		}
		if len(f.Payload) != sizes[got] {
			t.Fatalf("frame %d joined to %d bytes, want %d", got, len(f.Payload), sizes[got])
		}
		for k, c := range f.Payload {
			if c != byte(got*31+k) {
				t.Fatalf("frame %d byte %d differs", got, k)
			}
		}
		got++
	}
	if got != len(sizes) {
		t.Fatalf("%d frames joined, want %d", got, len(sizes))
	}
}

// TestPoliciesAreBounded: every built-in policy is valid on both sides and
// bounds its dummies with a budget; off has no parameters at all.
func TestPoliciesAreBounded(t *testing.T) {
	if DefencePolicy(wire.DefenceOff, Client) != nil || DefencePolicy(wire.DefenceOff, Server) != nil {
		t.Fatal("off has defence parameters")
	}
	for p := wire.DefenceLight; p <= wire.DefenceMax; p++ {
		for _, r := range []Role{Client, Server} {
			d := DefencePolicy(p, r)
			if err := d.Validate(); err != nil {
				t.Errorf("%v role %d: %v", p, r, err)
			}
			if d.Budget <= 0 || d.BudgetFree <= 0 || d.Cell == 0 || d.MaxEpisode == 0 {
				t.Errorf("%v role %d: dummies unbounded (budget %g + %d bytes, cell %d, max_episode %d)", p, r, d.Budget, d.BudgetFree, d.Cell, d.MaxEpisode)
			}
			if d.Step != 0 {
				t.Errorf("%v role %d: the rate climbs with the data (step %v): the observer learns when", p, r, d.Step)
			}
		}
	}
}

// TestDefenceClearsTakenBatch: the frames of a batch the stage has taken
// are cleared in the batch's array, paced or not (the mux reuses its
// batches' arrays: a stale copy would keep freed payload buffers
// reachable).
func TestDefenceClearsTakenBatch(t *testing.T) {
	for _, policy := range []wire.DefencePolicy{wire.DefenceLight, wire.DefenceStandard} {
		synctest.Test(t, func(t *testing.T) {
			in := make(chan Batch)
			out := make(chan Batch, 64)
			d := &Defence{Params: DefencePolicy(policy, Client), In: in, Out: out, Rand: rand.New(rand.NewPCG(5, 6))}
			done := make(chan error)
			go func() { done <- d.Run(context.Background()) }()
			b := dataBatch(100)
			b[0].buf = getBuf(100)
			in <- b
			synctest.Wait()
			if b[0].buf != nil || b[0].Payload != nil {
				t.Fatalf("policy %v: the taken batch still refers to its payload", policy)
			}
			close(in)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			for b := range out {
				for i := range b {
					b[i].Release()
				}
			}
		})
	}
}
