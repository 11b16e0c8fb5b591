package learner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/store"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// StepRecord is one line of the run's metrics (runfiles.ReadMetrics reads them back).
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
	// ResampleRounds is how many rounds of fresh prompts this step asked for (too few informative
	// groups under grpo.filter_zero_std) before it trained; FilteredGroups the tied groups dropped.
	ResampleRounds int `json:"resample_rounds,omitempty"`
	FilteredGroups int `json:"filtered_groups,omitempty"`
	// WaitSeconds is the time from the previous step's end until this step's groups were complete
	// (rollout + reward); TrainSeconds the update; StepSeconds both plus publishing.
	WaitSeconds  float64   `json:"wait_seconds"`
	TrainSeconds float64   `json:"train_seconds"`
	StepSeconds  float64   `json:"step_seconds"`
	Time         time.Time `json:"time"`
}

// appendMetrics adds rec to the run's metrics (runfiles: segments of MetricsSegmentSteps steps).
// The store has no append, so the learner keeps the current segment in memory and writes it anew
// each step: a step uploads at most a segment, never the run's whole history.
func (l *Learner) appendMetrics(ctx context.Context, rec StepRecord) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	l.mu.Lock()
	if start := runfiles.MetricsSegmentStart(rec.Step); start != l.metricsStart {
		l.metrics.Reset()
		l.metricsStart = start
	}
	l.metrics.Write(line)
	l.metrics.WriteByte('\n')
	seg := bytes.Clone(l.metrics.Bytes())
	l.mu.Unlock()
	key := runfiles.MetricsSegmentKey(l.cfg.RunID, rec.Step)
	if err := l.o.Store.Put(ctx, key, bytes.NewReader(seg), int64(len(seg))); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// resumeMetrics makes the stored metrics end at step last (the checkpoint resumed from): lines of
// later steps belong to the interrupted run, which this one learns again and writes anew. It
// keeps the segment of step last+1 in memory for appendMetrics, rewrites it without the later
// lines and deletes later segments. last < 0 (a run starting over) drops every line.
func (l *Learner) resumeMetrics(ctx context.Context, last int64) error {
	st, run := l.o.Store, l.cfg.RunID
	next := last + 1
	start := runfiles.MetricsSegmentStart(next)
	curKey := runfiles.MetricsSegmentKey(run, next)
	// Only the segment of the next step can hold lines on both sides of the checkpoint; the
	// earlier ones stay as they are, the later ones go.
	cur, err := linesBetween(ctx, st, curKey, start, last)
	if err != nil {
		return err
	}
	segs, err := st.List(ctx, runfiles.MetricsPrefix(run))
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	for _, o := range segs {
		if o.Key > curKey {
			if err := st.Delete(ctx, o.Key); err != nil {
				return fmt.Errorf("metrics: drop %s: %w", o.Key, err)
			}
		}
	}
	if len(cur) > 0 {
		if err := st.Put(ctx, curKey, bytes.NewReader(cur), int64(len(cur))); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	} else if err := st.Delete(ctx, curKey); err != nil {
		return fmt.Errorf("metrics: drop %s: %w", curKey, err)
	}
	// A run of an earlier version kept every line in one file: cut it at the checkpoint too.
	legacy := runfiles.LegacyMetricsKey(run)
	if info, err := st.Stat(ctx, legacy); err == nil {
		kept, err := linesBetween(ctx, st, legacy, 0, last)
		if err != nil {
			return err
		}
		if int64(len(kept)) != info.Size {
			if err := st.Put(ctx, legacy, bytes.NewReader(kept), int64(len(kept))); err != nil {
				return fmt.Errorf("metrics: %w", err)
			}
		}
	}
	l.mu.Lock()
	l.metrics.Reset()
	l.metrics.Write(cur)
	l.metricsStart = start
	l.mu.Unlock()
	return nil
}

// linesBetween is the metrics lines of key whose step is in [from, last] (none when key is missing).
func linesBetween(ctx context.Context, st store.Store, key string, from, last int64) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(store.ContextReader(ctx, rc), runfiles.MaxMetricsBytes))
	if err != nil {
		return nil, fmt.Errorf("metrics: read %s: %w", key, err)
	}
	var out bytes.Buffer
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if s := runfiles.MetricsStep(line); s >= from && s <= last {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes(), nil
}
