package learner

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/store"
)

// PartProgress is the checkpoint part holding the run's clock (Progress, JSON).
const PartProgress = "progress"

// Progress is how far a run has come in time, kept with every checkpoint so a resumed run's
// time budget (config.TimeBudget) counts the time its earlier starts trained.
type Progress struct {
	// ElapsedSeconds is the run's time up to the end of the checkpoint's step: every step's
	// wait for its groups and its update, over all starts of the run.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// LastStepSeconds is the checkpoint's step's share of it: what the budget expects the next
	// step to take.
	LastStepSeconds float64 `json:"last_step_seconds"`
	// Final says the time budget ended the run with this step.
	Final bool `json:"final,omitempty"`
}

func (p Progress) elapsed() time.Duration {
	return time.Duration(p.ElapsedSeconds * float64(time.Second))
}

// budgetEnds says whether a step that brought the run's time to elapsed, itself taking took,
// is the last that fits the time budget: one more as long would end past it.
func budgetEnds(budget, elapsed, took time.Duration) bool {
	return budget > 0 && elapsed+took > budget
}

// loadProgress reads the clock of checkpoint m; a checkpoint without one (written before runs
// had a clock) starts the clock at zero.
func loadProgress(ctx context.Context, st store.Store, m ckpt.Manifest) (Progress, error) {
	if _, ok := m.Part(PartProgress); !ok {
		return Progress{}, nil
	}
	b, err := ckpt.Load(ctx, st, m, PartProgress)
	if err != nil {
		return Progress{}, err
	}
	var p Progress
	if err := json.Unmarshal(b, &p); err != nil {
		return Progress{}, fmt.Errorf("progress: %w", err)
	}
	if !(p.ElapsedSeconds >= 0) || !(p.LastStepSeconds >= 0) || p.LastStepSeconds > p.ElapsedSeconds {
		return Progress{}, fmt.Errorf("progress: elapsed %v s, last step %v s: want 0 <= last step <= elapsed", p.ElapsedSeconds, p.LastStepSeconds)
	}
	return p, nil
}
