package wfbench

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// TestVolumeBound: unpadded volumes name most pages, a factor-2 bucket
// far fewer, one bucket for everything exactly chance; padding costs
// nothing without buckets and within one bucket with them; the result is
// the same every time.
func TestVolumeBound(t *testing.T) {
	const pages, loads = 20, 40
	rows := VolumeBound(1, pages, loads, []float64{1, 2, 1e12})
	if len(rows) != 5 { // none, 2, 1e12 fixed; 2, 1e12 random
		t.Fatalf("%d rows: %+v", len(rows), rows)
	}
	none, two, one, twoR := rows[0], rows[1], rows[2], rows[3]
	if none.Overhead != 0 || none.Accuracy < 0.5 {
		t.Errorf("no padding: %+v, want no overhead and most pages named", none)
	}
	if two.Overhead <= 0.2 || two.Overhead >= 1 || twoR.Overhead <= 0.2 || twoR.Overhead >= 1 {
		t.Errorf("bucket 2: overheads %v and %v, want within one bucket", two.Overhead, twoR.Overhead)
	}
	if two.Accuracy >= none.Accuracy-0.1 || twoR.Accuracy >= none.Accuracy-0.1 {
		t.Errorf("bucket 2 names %.3f/%.3f of the loads against %.3f unpadded", two.Accuracy, twoR.Accuracy, none.Accuracy)
	}
	if math.Abs(one.Accuracy-1.0/pages) > 1e-9 {
		t.Errorf("one bucket for every load: accuracy %v, want chance %v", one.Accuracy, 1.0/pages)
	}
	again := VolumeBound(1, pages, loads, []float64{1, 2, 1e12})
	for i := range rows {
		if rows[i] != again[i] {
			t.Fatalf("not deterministic: %+v then %+v", rows[i], again[i])
		}
	}
	var out bytes.Buffer
	WriteBound(&out, 1, pages, loads, rows)
	if !strings.Contains(out.String(), "| none | - | 0.0 % |") || strings.Count(out.String(), "\n| ") != 2+len(rows) {
		t.Errorf("table:\n%s", out.String())
	}
}

// TestNameVolume: the page with the most training loads within the
// window, the lower page on a tie, and the nearest load's page when none
// is that close.
func TestNameVolume(t *testing.T) {
	train := []boundSample{{1.0, 2}, {1.001, 1}, {1.002, 1}, {1.003, 2}, {2.0, 0}, {3.0, 3}, {3.001, 4}}
	counts := make([]int, 5)
	for _, tc := range []struct {
		v    float64
		want int
	}{
		{1.0015, 1}, // 1,1 against 2,2 within ±0.005: a tie, the lower page
		{1.0045, 1}, // 1.0–1.003 all within: 2 each again
		{1.007, 1},  // 1.002 and 1.003: one each, the lower page
		{2.001, 0},  // the one load there
		{1.5, 2},    // nothing within: 1.003 is nearer than 2.0
		{1.9, 0},    // nearer 2.0
		{0.5, 2},    // below all: the first
		{9, 4},      // above all: the last
		{3.0005, 3}, // 3 and 4, one each: the lower
	} {
		if got := nameVolume(train, tc.v, counts); got != tc.want {
			t.Errorf("nameVolume(%v) = %d, want %d", tc.v, got, tc.want)
		}
	}
}
