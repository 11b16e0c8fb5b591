package learner

import (
	"testing"
	"time"
)

func TestBudgetEnds(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		budget, elapsed, took time.Duration
		want                  bool
	}{
		{0, 10 * time.Hour, s, false},                  // no budget
		{10 * s, 8 * s, s, false},                      // one more step ends at 9 s
		{10 * s, 9 * s, s, false},                      // ... exactly at the budget
		{10 * s, 9 * s, 1100 * time.Millisecond, true}, // ... past it
		{10 * s, 12 * s, s, true},                      // already past
	} {
		if got := budgetEnds(tc.budget, tc.elapsed, tc.took); got != tc.want {
			t.Errorf("budget %v, elapsed %v, step %v: ends %v, want %v", tc.budget, tc.elapsed, tc.took, got, tc.want)
		}
	}
}
