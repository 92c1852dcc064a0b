package bench

import (
	"math"
	"slices"
	"time"
)

// Metric is one figure of one tunnel: the value of each run and their
// median, minimum and maximum.
type Metric struct {
	Runs   []float64 `json:"runs"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
}

// NewMetric summarises the values of several runs. It returns nil for no
// runs.
func NewMetric(runs ...float64) *Metric {
	if len(runs) == 0 {
		return nil
	}
	s := slices.Clone(runs)
	slices.Sort(s)
	return &Metric{Runs: slices.Clone(runs), Median: Median(s), Min: s[0], Max: s[len(s)-1]}
}

// Median is the median of sorted values (the mean of the two middle ones
// for an even count); NaN for none.
func Median(sorted []float64) float64 {
	n := len(sorted)
	switch {
	case n == 0:
		return math.NaN()
	case n%2 == 1:
		return sorted[n/2]
	default:
		return (sorted[n/2-1] + sorted[n/2]) / 2
	}
}

// Percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted
// durations; 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Micros and Millis express a duration as a float for the table.
func Micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Millis is d in milliseconds.
func Millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Gbps is a rate in Gbit/s for n bytes in d.
func Gbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) * 8 / d.Seconds() / 1e9
}
