package wfbench

import (
	"fmt"
	"math"
	"sort"
)

// Feature-vector layout (k-FP style, Hayes & Danezis 2016, with CUMUL,
// Panchenko et al. 2016). FeatureNames lists them in order.
const (
	firstN      = 30  // first packets as signed sizes
	burstsN     = 10  // first bursts as signed byte counts
	ppsSlots    = 20  // packets per second, first seconds
	concChunk   = 20  // outgoing concentration: packets per chunk
	concSlots   = 20  // concentrations summed into this many slots
	cumulPoints = 100 // CUMUL interpolation points
)

// size-histogram bin upper edges (payload bytes)
var sizeEdges = []int32{64, 128, 256, 512, 768, 1024, 1280, 1400, MSS - 1, MSS}

// FeatureNames is the name of each feature, in vector order.
var FeatureNames = featureNames()

func featureNames() []string {
	var n []string
	add := func(f string, a ...any) { n = append(n, fmt.Sprintf(f, a...)) }
	for _, s := range []string{"n_total", "n_out", "n_in", "bytes_total", "bytes_out", "bytes_in", "frac_out", "frac_in", "frac_bytes_in"} {
		add("%s", s)
	}
	for _, d := range []string{"out", "in"} {
		for _, e := range sizeEdges {
			add("size_%s_le%d", d, e)
		}
		add("unique_sizes_%s", d)
	}
	for i := range firstN {
		add("first_%d", i)
	}
	add("first30_out")
	add("first30_in")
	add("last30_out")
	add("last30_in")
	add("bursts")
	for _, d := range []string{"out", "in"} {
		for _, s := range []string{"count", "pkts_mean", "pkts_max", "pkts_std", "bytes_mean", "bytes_max", "bytes_median"} {
			add("burst_%s_%s", d, s)
		}
	}
	for i := range burstsN {
		add("burst_bytes_%d", i)
	}
	for _, d := range []string{"total", "out", "in"} {
		for _, s := range []string{"mean", "std", "max", "p25", "p50", "p75"} {
			add("iat_%s_%s", d, s)
		}
	}
	for _, d := range []string{"total", "out", "in"} {
		for _, s := range []string{"p25", "p50", "p75", "p100"} {
			add("time_%s_%s", d, s)
		}
	}
	for i := range ppsSlots {
		add("pps_%d", i)
	}
	for _, s := range []string{"mean", "std", "median", "min", "max"} {
		add("pps_%s", s)
	}
	for _, s := range []string{"mean", "std", "median", "min", "max"} {
		add("conc_%s", s)
	}
	for i := range concSlots {
		add("conc_slot_%d", i)
	}
	for i := range cumulPoints {
		add("cumul_%d", i)
	}
	return n
}

// Features turns a trace into its feature vector (len(FeatureNames)
// values, never NaN). An empty trace gives zeros.
func Features(tr []Packet) []float64 {
	f := make([]float64, 0, len(FeatureNames))
	add := func(v ...float64) { f = append(f, v...) }
	var out, in []Packet
	var bOut, bIn float64
	for _, p := range tr {
		if p.Size > 0 {
			out = append(out, p)
			bOut += float64(p.Size)
		} else {
			in = append(in, p)
			bIn -= float64(p.Size)
		}
	}
	n := float64(len(tr))
	add(n, float64(len(out)), float64(len(in)), bOut+bIn, bOut, bIn,
		ratio(float64(len(out)), n), ratio(float64(len(in)), n), ratio(bIn, bOut+bIn))

	for _, dir := range [][]Packet{out, in} {
		h := make([]float64, len(sizeEdges))
		uniq := map[int32]bool{}
		for _, p := range dir {
			s := abs32(p.Size)
			uniq[s] = true
			h[sort.Search(len(sizeEdges), func(i int) bool { return sizeEdges[i] >= s })]++
		}
		for _, v := range h {
			add(ratio(v, float64(len(dir))))
		}
		add(float64(len(uniq)))
	}

	for i := range firstN {
		if i < len(tr) {
			add(float64(tr[i].Size))
		} else {
			add(0)
		}
	}
	co, ci := countDir(tr[:min(30, len(tr))])
	add(co, ci)
	co, ci = countDir(tr[max(0, len(tr)-30):])
	add(co, ci)

	// Bursts: maximal runs of packets in one direction.
	type burst struct{ pkts, bytes float64 }
	var bursts []float64 // signed bytes
	var bo, bi []burst
	for i := 0; i < len(tr); {
		j, b := i, burst{}
		for j < len(tr) && (tr[j].Size > 0) == (tr[i].Size > 0) {
			b.pkts++
			b.bytes += float64(abs32(tr[j].Size))
			j++
		}
		if tr[i].Size > 0 {
			bo = append(bo, b)
			bursts = append(bursts, b.bytes)
		} else {
			bi = append(bi, b)
			bursts = append(bursts, -b.bytes)
		}
		i = j
	}
	add(float64(len(bursts)))
	for _, bs := range [][]burst{bo, bi} {
		pk := make([]float64, len(bs))
		by := make([]float64, len(bs))
		for i, b := range bs {
			pk[i], by[i] = b.pkts, b.bytes
		}
		add(float64(len(bs)), mean(pk), maxOf(pk), std(pk), mean(by), maxOf(by), quantile(by, 0.5))
	}
	for i := range burstsN {
		if i < len(bursts) {
			add(bursts[i])
		} else {
			add(0)
		}
	}

	times := func(ps []Packet) []float64 {
		t := make([]float64, len(ps))
		for i, p := range ps {
			t[i] = p.T.Seconds()
		}
		return t
	}
	all, tOut, tIn := times(tr), times(out), times(in)
	for _, t := range [][]float64{all, tOut, tIn} {
		iat := make([]float64, 0, len(t))
		for i := 1; i < len(t); i++ {
			iat = append(iat, t[i]-t[i-1])
		}
		add(mean(iat), std(iat), maxOf(iat), quantile(iat, 0.25), quantile(iat, 0.5), quantile(iat, 0.75))
	}
	for _, t := range [][]float64{all, tOut, tIn} {
		add(quantile(t, 0.25), quantile(t, 0.5), quantile(t, 0.75), quantile(t, 1))
	}

	// Packets per second.
	var pps []float64
	for _, t := range all {
		s := int(t)
		for len(pps) <= s {
			pps = append(pps, 0)
		}
		pps[s]++
	}
	for i := range ppsSlots {
		if i < len(pps) {
			add(pps[i])
		} else {
			add(0)
		}
	}
	add(mean(pps), std(pps), quantile(pps, 0.5), minOf(pps), maxOf(pps))

	// Outgoing packets per chunk of concChunk packets.
	var conc []float64
	for i := 0; i < len(tr); i += concChunk {
		c, _ := countDir(tr[i:min(len(tr), i+concChunk)])
		conc = append(conc, c)
	}
	add(mean(conc), std(conc), quantile(conc, 0.5), minOf(conc), maxOf(conc))
	slots := make([]float64, concSlots)
	for i, c := range conc {
		slots[i*concSlots/len(conc)] += c
	}
	add(slots...)

	add(cumul(tr)...)
	return f
}

// cumul interpolates the cumulative signed byte sum (outgoing positive)
// over the cumulative absolute byte sum at cumulPoints evenly spaced
// points.
func cumul(tr []Packet) []float64 {
	out := make([]float64, cumulPoints)
	if len(tr) == 0 {
		return out
	}
	xs := make([]float64, len(tr)+1)
	ys := make([]float64, len(tr)+1)
	for i, p := range tr {
		xs[i+1] = xs[i] + float64(abs32(p.Size))
		ys[i+1] = ys[i] + float64(p.Size)
	}
	total := xs[len(xs)-1]
	j := 0
	for k := range cumulPoints {
		x := total * float64(k+1) / cumulPoints
		for j < len(xs)-2 && xs[j+1] < x {
			j++
		}
		dx := xs[j+1] - xs[j]
		frac := 0.0
		if dx > 0 {
			frac = math.Min(1, math.Max(0, (x-xs[j])/dx))
		}
		out[k] = ys[j] + frac*(ys[j+1]-ys[j])
	}
	return out
}

func countDir(ps []Packet) (out, in float64) {
	for _, p := range ps {
		if p.Size > 0 {
			out++
		} else {
			in++
		}
	}
	return out, in
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return ratio(s, float64(len(v)))
}

func std(v []float64) float64 {
	if len(v) < 2 {
		return 0
	}
	m, s := mean(v), 0.0
	for _, x := range v {
		s += (x - m) * (x - m)
	}
	return math.Sqrt(s / float64(len(v)))
}

func maxOf(v []float64) float64 {
	m := 0.0
	for i, x := range v {
		if i == 0 || x > m {
			m = x
		}
	}
	return m
}

func minOf(v []float64) float64 {
	m := 0.0
	for i, x := range v {
		if i == 0 || x < m {
			m = x
		}
	}
	return m
}

// quantile is the q-quantile of v by linear interpolation (0 if empty).
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}
