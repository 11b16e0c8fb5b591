// Package stats holds the rank statistics the evaluations share: Spearman's rank correlation
// (expert and reward alignment with the oracle) and the ROC AUC (the outcome reward model).
package stats

import (
	"math"
	"sort"
)

// ranks returns average ranks (ties share the mean of their positions).
func ranks(x []float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return x[idx[a]] < x[idx[b]] })
	r := make([]float64, len(x))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && x[idx[j+1]] == x[idx[i]] {
			j++
		}
		for k := i; k <= j; k++ {
			r[idx[k]] = float64(i+j)/2 + 1
		}
		i = j + 1
	}
	return r
}

// Spearman is the rank correlation of x and y (0 when either is constant).
func Spearman(x, y []float64) float64 {
	rx, ry := ranks(x), ranks(y)
	var mx, my float64
	for i := range rx {
		mx += rx[i]
		my += ry[i]
	}
	mx /= float64(len(rx))
	my /= float64(len(ry))
	var sxy, sxx, syy float64
	for i := range rx {
		dx, dy := rx[i]-mx, ry[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return 0
	}
	return sxy / math.Sqrt(sxx*syy)
}

// AUC is the area under the ROC curve of scores for the positive labels (ties count half).
func AUC(scores []float64, pos []bool) float64 {
	r := ranks(scores)
	var np, nn, sum float64
	for i, p := range pos {
		if p {
			np++
			sum += r[i]
		} else {
			nn++
		}
	}
	if np == 0 || nn == 0 {
		return 0.5
	}
	return (sum - np*(np+1)/2) / (np * nn)
}
