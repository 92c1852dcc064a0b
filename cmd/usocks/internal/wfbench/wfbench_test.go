package wfbench

import (
	"context"
	"crypto/sha256"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestPagesInBounds(t *testing.T) {
	distinct := map[int]bool{}
	for id := range 200 {
		p := BasePage(1, id)
		if n := len(p.Objects); n < minObjects || n > maxObjects {
			t.Fatalf("page %d: %d objects", id, n)
		}
		if b := p.Bytes(); b < minPageBytes*9/10 || b > maxPageBytes*11/10 {
			t.Fatalf("page %d: %d bytes", id, b)
		}
		distinct[p.Bytes()] = true
		for load := range 3 {
			l := p.Load(1, id, load)
			for i, o := range l.Objects {
				if (i == 0) != (o.Parent < 0) || o.Parent >= i {
					t.Fatalf("page %d load %d object %d: parent %d", id, load, i, o.Parent)
				}
				if o.Size < minObjSize/2 || o.ReqSize < minReqSize || o.ReqSize > maxReqSize {
					t.Fatalf("page %d load %d object %d: %+v", id, load, i, o)
				}
			}
		}
	}
	if len(distinct) < 190 {
		t.Fatalf("only %d distinct page sizes in 200 pages", len(distinct))
	}
	// Same seed, same plan.
	a, b := BasePage(5, 3).Load(5, 3, 1), BasePage(5, 3).Load(5, 3, 1)
	if a.Bytes() != b.Bytes() || len(a.Objects) != len(b.Objects) {
		t.Fatal("plans not deterministic")
	}
}

func TestFeatures(t *testing.T) {
	ms := time.Millisecond
	tr := []Packet{{0, 500}, {ms, -1448}, {2 * ms, -1448}, {3 * ms, -100}, {1500 * ms, 300}, {1501 * ms, -1448}}
	f := Features(tr)
	if len(f) != len(FeatureNames) {
		t.Fatalf("%d features, %d names", len(f), len(FeatureNames))
	}
	get := func(name string) float64 {
		for i, n := range FeatureNames {
			if n == name {
				return f[i]
			}
		}
		t.Fatalf("no feature %s", name)
		return 0
	}
	for _, c := range []struct {
		name string
		want float64
	}{
		{"n_total", 6}, {"n_out", 2}, {"n_in", 4}, {"bytes_out", 800}, {"bytes_in", 4444},
		{"first_0", 500}, {"first_1", -1448}, {"first_5", -1448}, {"first_6", 0},
		{"bursts", 4}, {"burst_in_count", 2}, {"burst_in_pkts_max", 3}, {"burst_bytes_1", -2996},
		{"size_in_le1448", 0.75}, {"size_in_le128", 0.25}, {"unique_sizes_in", 2},
		{"pps_0", 4}, {"pps_1", 2}, {"time_total_p100", 1.501},
		{"cumul_99", 800 - 4444}, {"conc_slot_0", 2},
	} {
		if got := get(c.name); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	for _, tr := range [][]Packet{nil, {{0, -1}}, {{0, 1}, {0, 1}}} {
		for i, v := range Features(tr) {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("trace %v: feature %s = %v", tr, FeatureNames[i], v)
			}
		}
	}
}

func TestKNN(t *testing.T) {
	// Two well-separated classes with noise: k-NN must find them; labels
	// unrelated to the features must stay near chance.
	r := rand.New(rand.NewPCG(1, 2))
	var x [][]float64
	var y, noise []int
	for i := range 60 {
		c := i % 3
		x = append(x, []float64{float64(c)*10 + r.NormFloat64(), r.NormFloat64() * 100, 5})
		y = append(y, c)
		noise = append(noise, r.IntN(3))
	}
	if a := KNNAccuracy(x, y, 3, 10, 1); a < 0.95 {
		t.Fatalf("separable classes: accuracy %.2f", a)
	}
	if a := KNNAccuracy(x, noise, 3, 10, 1); a > 0.6 {
		t.Fatalf("random labels: accuracy %.2f", a)
	}
	folds := StratifiedFolds(y, 10, 3)
	per := map[[2]int]int{}
	for i, f := range folds {
		per[[2]int{f, y[i]}]++
	}
	for k, n := range per {
		if n != 2 {
			t.Fatalf("fold %d label %d: %d samples, want 2", k[0], k[1], n)
		}
	}
}

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []Link
		bad  bool
	}{
		{in: "unshaped,50mbit", want: []Link{{Name: "unshaped"}, {Name: "50mbit", RateMbit: 50}}},
		{in: "10mbit+20ms", want: []Link{{Name: "10mbit+20ms", RateMbit: 10, Delay: 20 * time.Millisecond}}},
		{in: "unshaped+5ms", want: []Link{{Name: "unshaped+5ms", Delay: 5 * time.Millisecond}}},
		{in: "fast", bad: true}, {in: "", bad: true}, {in: "0mbit", bad: true}, {in: "5mbit+x", bad: true},
	} {
		got, err := ParseLinks(c.in)
		if (err != nil) != c.bad {
			t.Fatalf("%q: err %v", c.in, err)
		}
		if !c.bad && (len(got) != len(c.want) || got[len(got)-1] != c.want[len(c.want)-1]) {
			t.Fatalf("%q: %+v", c.in, got)
		}
	}
	// Keys for both sides and for one side. (Only keys outside the
	// traffic-analysis settings, which the defence engine reshapes.)
	ps, err := ParsePolicies("default,x=keepalive:20s;server.half_closed_timeout:3m;client.rotate_after:1h")
	if err != nil || len(ps) != 2 || ps[0].Spec != "" || ps[1].Name != "x" || ps[0].Direct {
		t.Fatalf("%+v %v", ps, err)
	}
	c, s, err := ps[1].Configs("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 1, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if c.KeepAlive != 20*time.Second || s.KeepAlive != 20*time.Second || s.HalfClosedTimeout != 3*time.Minute ||
		c.HalfClosedTimeout == 3*time.Minute || c.RotateAfter != time.Hour || c.Port != 1 || c.Backend.Port != 2 || s.Frontend.Port != 3 {
		t.Fatalf("client %+v\nserver %+v", c, s)
	}
	if ps, err := ParsePolicies("direct"); err != nil || !ps[0].Direct {
		t.Fatalf("direct: %+v %v", ps, err)
	}
	ps, err = ParsePolicies("off,max,t=defense:standard;client.defense_tuning.front:40;defense_tuning.idle:300ms")
	if err != nil || len(ps) != 3 {
		t.Fatalf("%+v %v", ps, err)
	}
	for i, want := range []string{"off", "max", "standard"} {
		c, s, err := ps[i].Configs("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 1, 2, 3)
		if err != nil || c.Defense != want || s.Defense != want {
			t.Fatalf("%s: client %q server %q, %v", ps[i].Name, c.Defense, s.Defense, err)
		}
		if i == 2 && (c.DefenseTuning == nil || *c.DefenseTuning.Front != 40 || *c.DefenseTuning.Idle != 300*time.Millisecond ||
			s.DefenseTuning == nil || s.DefenseTuning.Front != nil || *s.DefenseTuning.Idle != 300*time.Millisecond) {
			t.Fatalf("tuning: client %+v server %+v", c.DefenseTuning, s.DefenseTuning)
		}
	}
	for _, bad := range []string{"nope", "x=defense", "x=nokey:1", "x=defense:huge", "x=defense_tuning:1", "x=defense:off;defense.x:1", "x=.:1", "default,default", ""} {
		if _, err := ParsePolicies(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}

// TestRecorderShaped sends a known stream each way through a shaped
// recorder: bytes arrive intact, every segment is at most MSS, and the
// recorded departures respect the rate (the recorder's own clock, so
// this holds however slow the machine is).
func TestRecorderShaped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const n = 200_000
	payload := make([]byte, n)
	_, _ = io.ReadFull(rand.NewChaCha8([32]byte{1}), payload)
	echoed := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			echoed <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c)
		echoed <- err
	}()
	rec, err := StartRecorder(ln.Addr().String(), Link{Name: "t", RateMbit: 100, Delay: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	c, err := net.Dial("tcp", rec.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		_, _ = c.Write(payload)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("echo differs (%d bytes back)", len(got))
	}
	if err := <-echoed; err != nil {
		t.Fatal(err)
	}
	rec.Close()
	tr := rec.Window(0, time.Hour)
	var out, in int
	var first, last time.Duration = -1, 0
	for _, p := range tr {
		if abs32(p.Size) > MSS || p.Size == 0 {
			t.Fatalf("segment of %d bytes", p.Size)
		}
		if p.Size > 0 {
			out += int(p.Size)
			if first < 0 {
				first = p.T
			}
			last = p.T
		} else {
			in -= int(p.Size)
		}
	}
	if out != n || in != n {
		t.Fatalf("recorded %d out, %d in; want %d each", out, in, n)
	}
	// All but the first segment's bytes had to pass the 100 Mbit/s link.
	bps := 100e6
	if floor := time.Duration(float64(n-MSS) * 8 / bps * float64(time.Second)); last-first < floor {
		t.Fatalf("outgoing took %v, faster than the link allows (%v)", last-first, floor)
	}
}

// TestSmoke is the bench in miniature: 3 pages × 2 loads through a real
// tunnel (and with no tunnel) on an unshaped link. Every object is
// SHA-256 checked by the loader; each load gets its own non-empty trace
// that carries at least the page; features are complete and finite; the
// Go k-NN runs; the raw traces can be written and read back.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("loads pages through a tunnel")
	}
	ps, err := ParsePolicies("default,direct")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		t.Run(p.Name, func(t *testing.T) { smoke(t, p) })
	}
}

func smoke(t *testing.T, p Policy) {
	var log strings.Builder
	res, err := Run(context.Background(), RunOptions{Pages: 3, Loads: 2, Seed: 7, Gap: 400 * time.Millisecond, Tail: 200 * time.Millisecond,
		Policy: p, Link: Link{Name: "unshaped"}, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	wantSessions := int64(1)
	if p.Direct {
		wantSessions = 0
	}
	if len(res.Samples) != 6 || res.Sessions != wantSessions {
		t.Fatalf("%d samples, %d sessions", len(res.Samples), res.Sessions)
	}
	var x [][]float64
	var y []int
	seen := map[[2]int]bool{}
	for _, s := range res.Samples {
		seen[[2]int{s.Page, s.Load}] = true
		page := BasePage(7, s.Page).Load(7, s.Page, s.Load)
		var in int64
		for _, p := range s.Trace {
			if p.Size < 0 {
				in -= int64(p.Size)
			}
		}
		// The page's bodies, but not two pages' worth: the trace is
		// this load's. Through the tunnel the default defence paces
		// every page load with dummies (several times the page), so
		// only a loose bound holds there.
		limit := 2*int64(page.Bytes()) + 100_000
		if !p.Direct {
			limit = 10*int64(page.Bytes()) + 2_000_000
		}
		if len(s.Trace) == 0 || in < int64(page.Bytes()) || in > limit {
			t.Fatalf("page %d load %d: %d packets, %d bytes in, page %d bytes", s.Page, s.Load, len(s.Trace), in, page.Bytes())
		}
		if s.PLT <= 0 || s.App < int64(page.Bytes()) {
			t.Fatalf("page %d load %d: PLT %v, app bytes %d", s.Page, s.Load, s.PLT, s.App)
		}
		f := Features(s.Trace)
		if len(f) != len(FeatureNames) || len(f) < 150 {
			t.Fatalf("%d features", len(f))
		}
		for i, v := range f {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("feature %s = %v", FeatureNames[i], v)
			}
		}
		x, y = append(x, f), append(y, s.Page)
	}
	if len(seen) != 6 {
		t.Fatalf("loads %v", seen)
	}
	if res.WireBytes <= res.AppBytes {
		t.Fatalf("wire %d ≤ app %d bytes", res.WireBytes, res.AppBytes)
	}
	if a := KNNAccuracy(x, y, 1, 2, 1); a < 0 || a > 1 {
		t.Fatalf("k-NN accuracy %v", a)
	}
	var sb strings.Builder
	rep := BuildReport([]*RunResult{res}, nil, p.Name, 3)
	rep.WriteMarkdown(&sb)
	if !strings.Contains(sb.String(), "| "+p.Name+" | unshaped | 6 |") {
		t.Fatalf("report:\n%s", sb.String())
	}
	var tb strings.Builder
	if err := WriteTraces(&tb, res); err != nil {
		t.Fatal(err)
	}
	back, err := ReadTraces(strings.NewReader(tb.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(res.Samples) {
		t.Fatalf("%d traces read back, want %d", len(back), len(res.Samples))
	}
	// A saved run reports again the same way.
	dir := t.TempDir()
	if err := writeFile(filepath.Join(dir, p.Name+"-unshaped.traces"), func(w io.Writer) error { return WriteTraces(w, res) }); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	again, err := Rereport(dir, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := again.Rows[0], rep.Rows[0]; a.Loads != b.Loads || a.Overhead != b.Overhead || a.AppBytes != b.AppBytes || a.Packets != b.Packets {
		t.Fatalf("report again: %+v, want %+v", a, b)
	}
	for i, s := range back {
		w := res.Samples[i]
		if s.Page != w.Page || s.Load != w.Load || s.PLT.Microseconds() != w.PLT.Microseconds() || s.App != w.App || len(s.Trace) != len(w.Trace) {
			t.Fatalf("trace %d read back as %+v", i, s)
		}
		for j := range s.Trace {
			if s.Trace[j].Size != w.Trace[j].Size || s.Trace[j].T != w.Trace[j].T.Truncate(time.Microsecond) {
				t.Fatalf("trace %d packet %d: %v, want %v", i, j, s.Trace[j], w.Trace[j])
			}
		}
	}
}
