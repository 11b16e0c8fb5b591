package learner

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/ckpt"
	storelocal "github.com/bicot-rl/bicot/pkg/store/local"
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

// TestLoadProgress: a checkpoint's clock is read back; one without (an older checkpoint) starts
// at zero; a malformed or impossible one is refused naming the part.
func TestLoadProgress(t *testing.T) {
	ctx := context.Background()
	st, err := storelocal.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	save := func(step int64, progress string) ckpt.Manifest {
		t.Helper()
		parts := map[string][]byte{ckpt.PartWeights: []byte("w")}
		if progress != "" {
			parts[PartProgress] = []byte(progress)
		}
		m, err := ckpt.Save(ctx, st, "r", step, parts, ckpt.Meta{PolicyVersion: step + 1})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if p, err := loadProgress(ctx, st, save(0, "")); err != nil || p != (Progress{}) {
		t.Errorf("no progress part: %+v, %v", p, err)
	}
	want := Progress{ElapsedSeconds: 12.5, LastStepSeconds: 2, Final: true}
	if p, err := loadProgress(ctx, st, save(1, `{"elapsed_seconds":12.5,"last_step_seconds":2,"final":true}`)); err != nil || p != want {
		t.Errorf("progress %+v, %v; want %+v", p, err, want)
	}
	for i, bad := range []string{`{"elapsed_seconds":`, `{"elapsed_seconds":-1}`, `{"elapsed_seconds":1,"last_step_seconds":2}`} {
		_, err := loadProgress(ctx, st, save(int64(2+i), bad))
		if err == nil || !strings.Contains(err.Error(), "progress") {
			t.Errorf("%s: %v, want an error naming the progress part", bad, err)
		}
	}
}
