package ckpt

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/bicot-rl/bicot/pkg/store"
)

// PartProgress is the part holding the run's clock (Progress, JSON), which the learner writes
// with every checkpoint.
const PartProgress = "progress"

// Progress is how far a run has come in time, kept with every checkpoint so a resumed run's time
// budget (config.TimeBudget) counts the time its earlier starts trained, and so a resumed
// coordinator knows a run the budget ended.
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

// Elapsed is ElapsedSeconds as a duration.
func (p Progress) Elapsed() time.Duration {
	return time.Duration(p.ElapsedSeconds * float64(time.Second))
}

// LoadProgress reads the clock of checkpoint m; a checkpoint without one (written before runs
// had a clock) starts the clock at zero.
func LoadProgress(ctx context.Context, st store.Store, m Manifest) (Progress, error) {
	if _, ok := m.Part(PartProgress); !ok {
		return Progress{}, nil
	}
	b, err := Load(ctx, st, m, PartProgress)
	if err != nil {
		return Progress{}, err
	}
	var p Progress
	if err := json.Unmarshal(b, &p); err != nil {
		return Progress{}, fmt.Errorf("checkpoint %s step %d: progress: %w", m.Run, m.Step, err)
	}
	if !(p.ElapsedSeconds >= 0) || !(p.LastStepSeconds >= 0) || p.LastStepSeconds > p.ElapsedSeconds {
		return Progress{}, fmt.Errorf("checkpoint %s step %d: progress: elapsed %v s, last step %v s: want 0 <= last step <= elapsed",
			m.Run, m.Step, p.ElapsedSeconds, p.LastStepSeconds)
	}
	return p, nil
}
