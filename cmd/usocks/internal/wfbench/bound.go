package wfbench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
)

// The volume bound: how well an observer who sees nothing of a load but
// the volume of its download names the page, once that volume is padded
// up to a bucket. A defence that does not know which page is loading can
// only pad what it sees; whatever else it hides (sizes, timing, bursts),
// the volume it sends is this observer's, so the accuracy here is a floor
// for the padding cost (a defence that pads more, or at random, does
// better; one that hides less, worse). Computed from the page model alone,
// without a tunnel: the loads' response bodies (pages.go), no headers, no
// upload, no cells.

// BoundRow is one padding scheme's result.
type BoundRow struct {
	// Bucket is the geometric bucket factor: each load's volume is padded
	// up to the next power of Bucket; 1: not padded.
	Bucket float64
	// Random shifts the bucket edges by an offset drawn per load
	// (uniform over one bucket), so equal pages do not share edges.
	Random bool
	// Overhead is the mean padding, a fraction of the volume.
	Overhead float64
	// Accuracy is the observer's, held out (see VolumeBound).
	Accuracy float64
}

// boundWindow is the observer's resolution, in log volume: 0.5 %.
const boundWindow = 0.005

// VolumeBound returns, for each bucket factor (fixed edges, then random
// ones), the accuracy of the observer on the padded download volumes of
// loads loads of each of pages pages of the set seed, trained on the even
// loads and tested on the odd ones and the other way round. For a volume
// it names the page with the most training loads within 0.5 % of it (the
// nearest training load's page when none is that close): with fixed
// buckets that is the most likely page of the bucket.
func VolumeBound(seed uint64, pages, loads int, buckets []float64) []BoundRow {
	vols := make([][]float64, pages) // log volume of each load
	for p := range pages {
		base := BasePage(seed, p)
		for l := range loads {
			vols[p] = append(vols[p], math.Log(float64(base.Load(seed, p, l).Bytes())))
		}
	}
	var rows []BoundRow
	for _, random := range []bool{false, true} {
		for _, b := range buckets {
			if random && b <= 1 {
				continue
			}
			rng := seeded(seed^0x243f6a8885a308d3, math.Float64bits(b))
			padded := make([][]float64, pages)
			over := 0.0
			for p := range pages {
				for _, v := range vols[p] {
					pv := v
					if b > 1 {
						lb := math.Log(b)
						off := 0.0
						if random {
							off = rng.Float64()
						}
						pv = (math.Ceil(v/lb-off) + off) * lb
					}
					padded[p] = append(padded[p], pv)
					over += math.Exp(pv-v) - 1
				}
			}
			rows = append(rows, BoundRow{Bucket: b, Random: random, Overhead: over / float64(pages*loads),
				Accuracy: volumeAccuracy(padded)})
		}
	}
	return rows
}

type boundSample struct {
	v    float64
	page int
}

// volumeAccuracy is the 2-fold held-out accuracy of the window
// classifier on padded[page][load].
func volumeAccuracy(padded [][]float64) float64 {
	right, total := 0, 0
	for fold := range 2 {
		var train []boundSample
		for p, ls := range padded {
			for l, v := range ls {
				if l%2 == fold {
					train = append(train, boundSample{v, p})
				}
			}
		}
		slices.SortFunc(train, func(a, b boundSample) int {
			if a.v != b.v {
				if a.v < b.v {
					return -1
				}
				return 1
			}
			return a.page - b.page
		})
		counts := make([]int, len(padded))
		for p, ls := range padded {
			for l, v := range ls {
				if l%2 == fold {
					continue
				}
				total++
				if nameVolume(train, v, counts) == p {
					right++
				}
			}
		}
	}
	return float64(right) / float64(total)
}

// nameVolume is the page the window classifier names for v (train sorted
// by volume; counts is scratch, one per page).
func nameVolume(train []boundSample, v float64, counts []int) int {
	lo := sort.Search(len(train), func(i int) bool { return train[i].v >= v-boundWindow })
	hi := sort.Search(len(train), func(i int) bool { return train[i].v > v+boundWindow })
	if lo == hi {
		// Nothing that close: the nearest training load.
		switch {
		case lo == len(train):
			return train[lo-1].page
		case lo == 0 || train[lo].v-v < v-train[lo-1].v:
			return train[lo].page
		default:
			return train[lo-1].page
		}
	}
	clear(counts)
	best := -1
	for _, s := range train[lo:hi] {
		counts[s.page]++
		if best < 0 || counts[s.page] > counts[best] || (counts[s.page] == counts[best] && s.page < best) {
			best = s.page
		}
	}
	return best
}

// DefaultBoundBuckets are the bucket factors `usocks wfbench -bound`
// reports: none, then from 5 % steps to factors of 4.
var DefaultBoundBuckets = []float64{1, 1.05, 1.1, 1.2, 1.25, 1.44, 2, 2.5, 3, 4}

// WriteBound prints VolumeBound's rows as a Markdown table.
func WriteBound(w io.Writer, seed uint64, pages, loads int, rows []BoundRow) {
	fmt.Fprintf(w, "volume-only observer, page set %d: %d pages × %d loads, download volume (response bodies) padded up to the next bucket; held-out accuracy (2-fold), chance %.3f\n\n",
		seed, pages, loads, 1/float64(pages))
	fmt.Fprintln(w, "| bucket | edges | mean padding | accuracy |")
	fmt.Fprintln(w, "| ---: | --- | ---: | ---: |")
	for _, r := range rows {
		b, edges := fmt.Sprintf("%g", r.Bucket), "fixed"
		if r.Bucket <= 1 {
			b, edges = "none", "-"
		} else if r.Random {
			edges = "random per load"
		}
		fmt.Fprintf(w, "| %s | %s | %.1f %% | %.3f |\n", b, edges, 100*r.Overhead, r.Accuracy)
	}
}
