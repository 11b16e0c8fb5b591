package learner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// StepRecord is one line of metrics.jsonl.
type StepRecord struct {
	Step          int64              `json:"step"`
	PolicyVersion int64              `json:"policy_version"`
	Stats         trainer.StepStats  `json:"stats"`
	PerExpert     map[string]float64 `json:"per_expert,omitempty"`
	Groups        int                `json:"groups"`
	Samples       int                `json:"samples"`
	// Learned lists the groups the step trained (prompt index, samples, their indices): with the
	// file rewritten from the checkpoint's history on every resume, it is the learner's durable
	// record of which groups the run learned, so a lost or twice-learned group shows in it.
	Learned []LearnedGroup `json:"learned,omitempty"`
	// ResampleRounds is how many rounds of this step were dropped whole (every group tied under
	// grpo.filter_zero_std) before this one trained; FilteredGroups the groups they held.
	ResampleRounds int `json:"resample_rounds,omitempty"`
	FilteredGroups int `json:"filtered_groups,omitempty"`
	// WaitSeconds is the time from the previous step's end until this step's groups were complete
	// (rollout + reward); TrainSeconds the update; StepSeconds both plus publishing.
	WaitSeconds  float64   `json:"wait_seconds"`
	TrainSeconds float64   `json:"train_seconds"`
	StepSeconds  float64   `json:"step_seconds"`
	Time         time.Time `json:"time"`
}

// metricsKey is where metrics.jsonl lives in the store.
func metricsKey(run string) string { return run + "/metrics.jsonl" }

// appendMetrics adds rec to metrics.jsonl. The store has no append, so the learner keeps the
// whole file in memory and writes it anew each step.
func (l *Learner) appendMetrics(ctx context.Context, rec StepRecord) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	l.mu.Lock()
	l.metrics.Write(line)
	l.metrics.WriteByte('\n')
	all := bytes.Clone(l.metrics.Bytes())
	l.mu.Unlock()
	if err := l.o.Store.Put(ctx, metricsKey(l.cfg.RunID), bytes.NewReader(all), int64(len(all))); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// readMetrics reads the run's metrics.jsonl as a previous learner left it.
func readMetrics(ctx context.Context, st store.Store, run string) ([]byte, error) {
	rc, err := st.Get(ctx, metricsKey(run))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(rc)
	return b.Bytes(), err
}

// metricsUpTo keeps the metrics.jsonl lines of steps <= last (unparseable lines are dropped).
func metricsUpTo(b []byte, last int64) []byte {
	var out bytes.Buffer
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		var r struct {
			Step *int64 `json:"step"`
		}
		if len(bytes.TrimSpace(line)) == 0 || json.Unmarshal(line, &r) != nil || r.Step == nil || *r.Step > last {
			continue
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes()
}
