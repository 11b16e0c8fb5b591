package learner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// Checkpoint part names written besides ckpt's conventional ones.
const (
	PartTrainer = "trainer" // trainer.Trainer.Save: weights + optimizer + reference + version
	PartConfig  = "config"  // the run config (YAML)
	PartLearned = "learned" // the group keys the checkpoint's step consumed (JSON list)
)

// checkpoint commits step's checkpoint, reports it, and prunes older ones under the run's
// retention. learned is the step's consumed group keys, which a learner resuming from it reports
// again.
func (l *Learner) checkpoint(ctx context.Context, step int64, stats trainer.StepStats, learned []string) error {
	start := time.Now()
	state, err := l.trainer.Save()
	if err != nil {
		return fmt.Errorf("checkpoint: trainer state: %w", err)
	}
	w, err := l.trainer.Weights()
	if err != nil {
		return fmt.Errorf("checkpoint: weights: %w", err)
	}
	cfg, err := l.cfg.Redacted().YAML()
	if err != nil {
		return fmt.Errorf("checkpoint: config: %w", err)
	}
	lj, err := json.Marshal(learned)
	if err != nil {
		return fmt.Errorf("checkpoint: learned groups: %w", err)
	}
	l.mu.Lock()
	clock := l.clock
	l.mu.Unlock()
	pj, err := json.Marshal(clock)
	if err != nil {
		return fmt.Errorf("checkpoint: progress: %w", err)
	}
	parts := map[string][]byte{PartTrainer: state, ckpt.PartWeights: w, PartConfig: cfg, PartLearned: lj, ckpt.PartProgress: pj}
	if l.o.RunState != nil {
		if rs, err := l.o.RunState(); err == nil {
			parts[ckpt.PartRunState] = rs
			if st, err := runstate.DecodeSnapshot(bytes.NewReader(rs)); err == nil {
				if cur, err := json.Marshal(st.Cursor); err == nil {
					parts[ckpt.PartCursor] = cur
				}
			}
		} else {
			l.log.Warn().Err(err).Msg("checkpoint without run-state snapshot")
		}
	}
	m, err := ckpt.Save(ctx, l.o.Store, l.cfg.RunID, step, parts, ckpt.Meta{PolicyVersion: l.trainer.Version(),
		Metrics: map[string]float64{"reward_mean": stats.RewardMean, "kl": stats.KL}})
	if err != nil && !errors.Is(err, ckpt.ErrExists) {
		return fmt.Errorf("checkpoint: %w", err)
	}
	key := ckpt.ManifestKey(l.cfg.RunID, step)
	if err == nil {
		key = m.Key
		size := 0
		for _, p := range parts {
			size += len(p)
		}
		l.prom.checkpoint(time.Since(start), size)
	}
	l.rep.Emit(ctx, bus.EventCheckpoint, step, l.trainer.Version(), 0, key, l.eventID("checkpoint/"+key))
	l.log.Info().Int64("step", step).Str("key", key).Msg("checkpoint committed")
	if r := l.cfg.Retention; r.KeepLast > 0 {
		removed, err := ckpt.Prune(ctx, l.o.Store, l.cfg.RunID, ckpt.Retention{KeepLast: r.KeepLast, KeepBest: r.KeepBest,
			Metric: r.Metric, LowerIsBetter: r.LowerIsBetter}, ckpt.WithLogger(l.log))
		if err != nil {
			// Retention is housekeeping: a failed delete must not stop training.
			l.log.Warn().Err(err).Msg("pruning checkpoints")
		} else if len(removed) > 0 {
			l.log.Debug().Ints64("steps", removed).Msg("pruned checkpoints")
		}
	}
	return nil
}
