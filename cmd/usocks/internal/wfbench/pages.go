// Package wfbench is the website-fingerprinting bench: it loads synthetic
// web pages through a usocks tunnel, records what an on-path observer sees
// at packet granularity, turns each page load into k-FP-style features and
// measures how well standard classifiers tell the pages apart, with the
// bandwidth and page-load-time cost of each traffic-analysis policy.
package wfbench

import (
	"math"
	"math/rand/v2"
)

// Page-model bounds.
const (
	minObjects   = 3
	maxObjects   = 80
	minObjSize   = 200
	maxObjSize   = 1_500_000
	minPageBytes = 50_000
	maxPageBytes = 3_000_000
	minReqSize   = 300
	maxReqSize   = 900
)

// Object is one resource of a page.
type Object struct {
	Size    int // response body bytes
	ReqSize int // request bytes (headers padded to this size)
	Parent  int // index of the object whose completion reveals this one; -1 for the HTML
	// Delay is how long after the parent finished the object is requested
	// (parse or script time), in microseconds.
	DelayUS int
	// ThinkUS is the server's time to first byte for this object.
	ThinkUS int
}

// Page is the plan of one page: object 0 is the HTML document, every other
// object has a parent with a smaller index (dependent waves).
type Page struct {
	Objects []Object
}

// Bytes is the page's total response body bytes.
func (p Page) Bytes() int {
	n := 0
	for _, o := range p.Objects {
		n += o.Size
	}
	return n
}

func seeded(a, b uint64) *rand.Rand { return rand.New(rand.NewPCG(a, b)) }

func logNormal(r *rand.Rand, median, sigma float64) float64 {
	return median * math.Exp(sigma*r.NormFloat64())
}

func clampInt(v float64, lo, hi int) int {
	if v < float64(lo) {
		return lo
	}
	if v > float64(hi) {
		return hi
	}
	return int(v)
}

// BasePage draws page number id of the set with the given seed. Pages
// differ in object count (heavy-tailed), object sizes (log-normal), the
// number and width of dependent waves, request sizes and server timing.
func BasePage(seed uint64, id int) Page {
	r := seeded(seed, uint64(id)*0x9e3779b97f4a7c15+1)
	n := clampInt(minObjects+logNormal(r, 14, 0.8), minObjects, maxObjects)
	medSize := logNormal(r, 12_000, 0.7)
	reqBase := minReqSize + r.IntN(maxReqSize-minReqSize-100)
	think := 2_000 + r.IntN(25_000)
	waves := 1 + r.IntN(4)
	objs := make([]Object, n)
	objs[0] = Object{Size: clampInt(logNormal(r, 40_000, 0.8), 2_000, 400_000), Parent: -1, ThinkUS: think * 2}
	waveOf := make([]int, n)
	for i := 1; i < n; i++ {
		// Earlier objects fall in earlier waves: a page's waves fill in order.
		w := 1 + (i-1)*waves/(n-1)
		if r.IntN(5) == 0 {
			w = 1 + r.IntN(waves)
		}
		waveOf[i] = w
		var parents []int
		for j := 0; j < i; j++ {
			if waveOf[j] == w-1 {
				parents = append(parents, j)
			}
		}
		parent := 0
		if len(parents) > 0 {
			parent = parents[r.IntN(len(parents))]
		}
		objs[i] = Object{
			Size:    clampInt(logNormal(r, medSize, 1.3), minObjSize, maxObjSize),
			ReqSize: 0,
			Parent:  parent,
			DelayUS: r.IntN(30_000),
			ThinkUS: think/2 + r.IntN(think),
		}
	}
	for i := range objs {
		objs[i].ReqSize = min(maxReqSize, reqBase+r.IntN(100))
	}
	// Keep the page total in bounds by scaling the non-HTML objects.
	p := Page{Objects: objs}
	if tot := p.Bytes(); tot > maxPageBytes || tot < minPageBytes {
		target := float64(min(max(tot, minPageBytes), maxPageBytes))
		html := float64(objs[0].Size)
		f := (target - html) / float64(tot-objs[0].Size)
		for i := 1; i < n; i++ {
			objs[i].Size = clampInt(float64(objs[i].Size)*f, minObjSize, maxObjSize)
		}
	}
	return p
}

// Load jitters a page for one load: sizes ±10 %, a small chance to skip an
// object (its children then hang on its parent) or to add one, timing
// jitter on discovery delays and server think times.
func (p Page) Load(seed uint64, page, load int) Page {
	r := seeded(seed^0x5bd1e995, uint64(page)<<32|uint64(load))
	jit := func(v, frac float64) float64 { return v * (1 + frac*(2*r.Float64()-1)) }
	keep := make([]int, len(p.Objects)) // old index → new index, or the new index of the nearest kept ancestor
	var out []Object
	for i, o := range p.Objects {
		if i > 0 && r.Float64() < 0.05 {
			keep[i] = keep[o.Parent]
			continue
		}
		n := o
		if i > 0 {
			n.Parent = keep[o.Parent]
		}
		n.Size = clampInt(jit(float64(o.Size), 0.10), minObjSize/2, maxObjSize*11/10)
		n.ReqSize = clampInt(jit(float64(o.ReqSize), 0.03), minReqSize, maxReqSize)
		n.DelayUS = int(jit(float64(o.DelayUS), 0.5))
		n.ThinkUS = int(jit(float64(o.ThinkUS), 0.3))
		keep[i] = len(out)
		out = append(out, n)
	}
	if r.Float64() < 0.1 && len(out) < maxObjects+5 {
		src := out[r.IntN(len(out))]
		src.Parent = r.IntN(len(out))
		src.Size = clampInt(logNormal(r, 8_000, 1.0), minObjSize, 200_000)
		out = append(out, src)
	}
	return Page{Objects: out}
}
