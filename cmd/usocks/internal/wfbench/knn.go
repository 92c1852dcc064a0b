package wfbench

import (
	"math"
	"math/rand/v2"
	"sort"
)

// StratifiedFolds assigns each sample a fold in [0, k): every label's
// samples are shuffled (seeded) and dealt round-robin, so each fold holds
// about the same share of each label.
func StratifiedFolds(labels []int, k int, seed uint64) []int {
	byLabel := map[int][]int{}
	var keys []int
	for i, l := range labels {
		if _, ok := byLabel[l]; !ok {
			keys = append(keys, l)
		}
		byLabel[l] = append(byLabel[l], i)
	}
	sort.Ints(keys)
	r := rand.New(rand.NewPCG(seed, 7))
	fold := make([]int, len(labels))
	next := 0
	for _, l := range keys {
		idx := byLabel[l]
		r.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		for _, i := range idx {
			fold[i] = next % k
			next++
		}
	}
	return fold
}

// KNNAccuracy is the cross-validated accuracy of a k-nearest-neighbour
// classifier (Euclidean distance on features standardised with each
// training fold's mean and deviation; ties go to the nearest neighbour's
// label) over folds stratified folds.
func KNNAccuracy(x [][]float64, labels []int, k, folds int, seed uint64) float64 {
	if len(x) == 0 {
		return 0
	}
	fold := StratifiedFolds(labels, folds, seed)
	correct := 0
	d := len(x[0])
	for f := range folds {
		var train, test []int
		for i := range x {
			if fold[i] == f {
				test = append(test, i)
			} else {
				train = append(train, i)
			}
		}
		if len(train) == 0 || len(test) == 0 {
			continue
		}
		mu := make([]float64, d)
		sd := make([]float64, d)
		for _, i := range train {
			for j, v := range x[i] {
				mu[j] += v
			}
		}
		for j := range mu {
			mu[j] /= float64(len(train))
		}
		for _, i := range train {
			for j, v := range x[i] {
				sd[j] += (v - mu[j]) * (v - mu[j])
			}
		}
		for j := range sd {
			sd[j] = math.Sqrt(sd[j] / float64(len(train)))
			if sd[j] == 0 {
				sd[j] = 1
			}
		}
		z := func(i int) []float64 {
			o := make([]float64, d)
			for j, v := range x[i] {
				o[j] = (v - mu[j]) / sd[j]
			}
			return o
		}
		zt := make([][]float64, len(train))
		for n, i := range train {
			zt[n] = z(i)
		}
		type nb struct {
			dist  float64
			label int
		}
		for _, i := range test {
			q := z(i)
			nbs := make([]nb, len(train))
			for n, t := range zt {
				s := 0.0
				for j := range q {
					e := q[j] - t[j]
					s += e * e
				}
				nbs[n] = nb{s, labels[train[n]]}
			}
			sort.Slice(nbs, func(a, b int) bool { return nbs[a].dist < nbs[b].dist })
			votes := map[int]int{}
			best, bestVotes := nbs[0].label, 0
			for _, n := range nbs[:min(k, len(nbs))] {
				votes[n.label]++
			}
			// Most votes wins; among equals, the label met first (nearest).
			for _, n := range nbs[:min(k, len(nbs))] {
				if votes[n.label] > bestVotes {
					best, bestVotes = n.label, votes[n.label]
				}
			}
			if best == labels[i] {
				correct++
			}
		}
	}
	return float64(correct) / float64(len(x))
}
