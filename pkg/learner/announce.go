package learner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/store"
)

// reannounceEvery is how often a learner waiting for groups publishes its current version again
// (a new message id each time, so it also replaces anything published on the policy subject
// since): what brings rollout workers back after the run's streams were reset (coordinator
// resume) or lost.
const reannounceEvery = 10 * time.Second

// announce publishes the trainer's current weights as its version.
func (l *Learner) announce(ctx context.Context, step int64) error {
	w, err := l.trainer.Weights()
	if err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	v := l.trainer.Version()
	key, sum, err := ckpt.PutWeights(ctx, l.o.Store, l.cfg.RunID, v, w)
	if err != nil {
		return fmt.Errorf("announce version %d: %w", v, err)
	}
	l.mu.Lock()
	final := l.clock.Final
	l.mu.Unlock()
	ann := bus.PolicyAnnounce{Run: l.cfg.RunID, Version: v, Step: step, WeightsKey: key, SHA256: sum, Learner: l.incarnation, Final: final}
	if err := l.retryPublish(ctx, "policy announcement", func() error {
		_, err := bus.AnnouncePolicy(ctx, l.js, ann)
		return err
	}); err != nil {
		return fmt.Errorf("announce version %d: %w", v, err)
	}
	l.mu.Lock()
	l.lastAnn, l.annAt = ann, time.Now()
	l.mu.Unlock()
	l.log.Info().Int64("version", v).Int64("step", step).Msg("policy announced")
	l.dropOldWeights(ctx, v)
	return nil
}

// dropOldWeights deletes the weights of the version that fell out of retention.keep_weights
// with version v: one per announcement, so weights/ stays that size however long the run.
// Rollout workers never need it again (a task names a version at most staleness behind), and
// checkpoints keep their own copy. A failure is logged; the next announcement tries its own.
func (l *Learner) dropOldWeights(ctx context.Context, v int64) {
	k := int64(l.cfg.Retention.KeepWeights)
	if k <= 0 || v-k < 0 {
		return
	}
	key := ckpt.WeightsKey(l.cfg.RunID, v-k)
	if err := l.o.Store.Delete(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
		l.log.Warn().Err(err).Str("key", key).Msg("dropping old weights")
	}
}

// reannounceIfDue publishes the last announcement again once reannounceEvery has passed. A failure
// is only logged: the next round tries again.
func (l *Learner) reannounceIfDue(ctx context.Context) {
	l.mu.Lock()
	ann, due := l.lastAnn, time.Since(l.annAt) > reannounceEvery
	l.mu.Unlock()
	if !due || ann.Run == "" {
		return
	}
	ann.Repeat++
	ann.Time = time.Time{}
	if _, err := bus.AnnouncePolicy(ctx, l.js, ann); err != nil && ctx.Err() == nil {
		l.log.Warn().Err(err).Int64("version", ann.Version).Msg("announcing the policy again")
	}
	l.mu.Lock()
	l.lastAnn, l.annAt = ann, time.Now()
	l.mu.Unlock()
}
