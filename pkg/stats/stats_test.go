package stats

import (
	"math"
	"testing"
)

func TestSpearmanAndAUC(t *testing.T) {
	for _, tc := range []struct {
		x, y []float64
		want float64
	}{
		{[]float64{1, 2, 3, 4}, []float64{10, 20, 30, 40}, 1},
		{[]float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}, -1},
		{[]float64{1, 1, 1}, []float64{1, 2, 3}, 0},
		{[]float64{1, 2, 3, 4}, []float64{0, 0, 1, 1}, 0.8944271909999159},
	} {
		if got := Spearman(tc.x, tc.y); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Spearman(%v, %v) = %v, want %v", tc.x, tc.y, got, tc.want)
		}
	}
	for _, tc := range []struct {
		s    []float64
		p    []bool
		want float64
	}{
		{[]float64{0.9, 0.8, 0.1, 0.2}, []bool{true, true, false, false}, 1},
		{[]float64{0.1, 0.2, 0.9, 0.8}, []bool{true, true, false, false}, 0},
		{[]float64{0.5, 0.5, 0.5, 0.5}, []bool{true, true, false, false}, 0.5},
		{[]float64{0.9, 0.3, 0.5, 0.2}, []bool{true, true, false, false}, 0.75},
	} {
		if got := AUC(tc.s, tc.p); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("AUC(%v, %v) = %v, want %v", tc.s, tc.p, got, tc.want)
		}
	}
}
