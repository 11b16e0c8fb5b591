package learner

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// trainStep runs the update of step's complete groups and publishes its outcome: the metrics
// line, the checkpoint when one is due, the new policy, and the step_done report, in that order,
// so a version is announced only after the checkpoint holding it is committed, and a step the
// coordinator sees as done is already announced and recorded. wait is the time since the
// previous step ended.
func (l *Learner) trainStep(ctx context.Context, step int64, wait time.Duration) error {
	start := time.Now()
	l.mu.Lock()
	groups := slices.Clone(l.complete[step])
	l.mu.Unlock()
	slices.SortFunc(groups, func(a, b bus.Group) int { return a.Key.PromptIndex - b.Key.PromptIndex })
	lgs := make([]trainer.Group, len(groups))
	for i, g := range groups {
		lgs[i] = trainer.Group(g)
	}
	fresh, stale := l.trainer.Partition(lgs)
	if len(stale) > 0 {
		l.log.Warn().Int("groups", len(stale)).Int64("version", l.trainer.Version()).Int("staleness", l.cfg.Staleness).
			Msg("groups outside the staleness bound are not trained")
	}
	if len(fresh) == 0 {
		return fmt.Errorf("all %d groups are outside the staleness bound %d of version %d", len(stale), l.cfg.Staleness, l.trainer.Version())
	}
	informative, tied, err := l.trainer.Informative(fresh)
	if err != nil {
		return err
	}
	l.mu.Lock()
	rounds := l.acct.Resampled[step]
	l.mu.Unlock()
	if len(tied) > 0 {
		switch {
		case len(informative) < l.cfg.PromptsPerStep && rounds < l.cfg.MaxResampleRounds:
			l.mu.Lock()
			l.roundsTook += time.Since(start) + wait
			l.mu.Unlock()
			return l.resample(ctx, step, informative, tied, stale)
		case len(informative) == 0:
			return fmt.Errorf("%w (step %d: %d rounds of %d groups tied, max_resample_rounds %d)", trainer.ErrAllFiltered,
				step, rounds+1, len(tied), l.cfg.MaxResampleRounds)
		}
		// Out of rounds: the step trains what it has; the tied groups are used up, not learned.
		l.mu.Lock()
		l.drop(step, tied)
		l.mu.Unlock()
		fresh = informative
	}
	t0 := time.Now()
	from := l.trainer.Version()
	stats, err := l.o.Update(l.trainer, fresh)
	if err != nil {
		return err
	}
	trainTime := time.Since(t0)
	l.mu.Lock()
	dropped, filtered := slices.Clone(l.dropped[step]), l.filtered[step]
	l.mu.Unlock()
	rec := StepRecord{Step: step, PolicyVersion: l.trainer.Version(), Stats: stats, PerExpert: stats.PerExpert,
		ResampleRounds: rounds, FilteredGroups: filtered, Groups: len(fresh), WaitSeconds: wait.Seconds(), TrainSeconds: trainTime.Seconds(), Time: time.Now().UTC()}
	learned, lg, samples := consumed(fresh, stale, dropped)
	rec.Samples, rec.Learned = samples, lg
	l.mu.Lock()
	took := l.roundsTook + time.Since(start) + wait
	l.roundsTook = 0
	l.clock.ElapsedSeconds += took.Seconds()
	l.clock.LastStepSeconds = took.Seconds()
	early := step+1 < int64(l.cfg.Steps) && budgetEnds(l.cfg.TimeBudget.D(), l.clock.Elapsed(), took)
	l.clock.Final = early
	l.mu.Unlock()
	if early {
		l.log.Info().Int64("step", step).Dur("elapsed", l.clock.Elapsed()).Dur("time_budget", l.cfg.TimeBudget.D()).
			Msg("the time budget ends the run with this step")
	}
	final := step+1 >= int64(l.cfg.Steps) || early
	if l.o.Codebook != nil && keepSamples(step, final, l.cfg.SamplesEvery) {
		// Samples are for people looking at the run: a store hiccup here costs them, not the run.
		if err := l.writeSamples(ctx, step, from, fresh); err != nil {
			l.log.Warn().Err(err).Int64("step", step).Msg("samples not kept")
		}
	}
	rec.StepSeconds = time.Since(start).Seconds() + wait.Seconds()
	published := time.Now()
	if err := l.appendMetrics(ctx, rec); err != nil {
		return err
	}
	if final || (l.cfg.CheckpointEvery > 0 && (step+1)%int64(l.cfg.CheckpointEvery) == 0) {
		if err := l.checkpoint(ctx, step, stats, learned); err != nil {
			return err
		}
	}
	// Announced only once the checkpoint that holds it (when one is due) is committed: no worker
	// samples with a version a restarted learner could not resume.
	if err := l.announce(ctx, step+1); err != nil {
		return err
	}
	if err := l.reportStep(ctx, rec, learned, early); err != nil {
		return err
	}
	l.prom.stepDone(rec, time.Since(published))
	l.mu.Lock()
	l.acct.Learned[step] = lg
	l.acct.StaleGroups += len(stale)
	l.acct.Stats = append(l.acct.Stats, stats)
	delete(l.complete, step)
	delete(l.dropped, step)
	delete(l.filtered, step)
	l.next = step + 1
	l.mu.Unlock()
	l.coll.Forget(step + 1)
	l.log.Info().Int64("step", step).Int64("version", l.trainer.Version()).Float64("reward", stats.RewardMean).
		Float64("loss", stats.Loss).Float64("kl", stats.KL).Float64("ratio", stats.RatioMean).
		Dur("train", trainTime).Dur("wait", wait).Msg("step learned")
	if l.o.OnStep != nil {
		l.o.OnStep(rec)
	}
	return nil
}

// consumed lists the group keys a step used up, which the coordinator forgets with the step: the
// trained groups, those of rounds dropped whole (dropped) and the stale ones. It also returns
// the trained groups as recorded in Accounting and how many samples they hold.
func consumed(fresh, stale []trainer.Group, dropped []string) (learned []string, lg []LearnedGroup, samples int) {
	for _, g := range fresh {
		learned = append(learned, groupKey(g.Key))
		idx := make([]int, len(g.Samples))
		for i, s := range g.Samples {
			idx[i] = s.SampleIndex
		}
		lg = append(lg, LearnedGroup{PromptIndex: g.Key.PromptIndex, Samples: len(g.Samples), SampleIndices: idx})
		samples += len(g.Samples)
	}
	learned = append(learned, dropped...)
	for _, g := range stale {
		learned = append(learned, groupKey(g.Key))
	}
	return learned, lg, samples
}

// reportStep tells the coordinator the step is done, with the groups it consumed and the metrics
// the coordinator shows.
func (l *Learner) reportStep(ctx context.Context, rec StepRecord, learned []string, final bool) error {
	stats := rec.Stats
	metrics := map[string]float64{"loss": stats.Loss, "reward_mean": stats.RewardMean, "kl": stats.KL,
		"ratio_mean": stats.RatioMean, "zero_std_ratio": stats.ZeroStdRatio, "step_seconds": rec.StepSeconds,
		"resample_rounds": float64(rec.ResampleRounds)}
	for k, v := range stats.PerExpert {
		metrics["reward/"+k] = v
	}
	if err := l.retryPublish(ctx, "step_done", func() error {
		return l.rep.EmitJSON(ctx, bus.EventStepDone, rec.Step, l.trainer.Version(), bus.StepReport{Learned: learned, Metrics: metrics, Final: final},
			l.eventID(fmt.Sprintf("step/%d", rec.Step)))
	}); err != nil {
		return fmt.Errorf("report step done: %w", err)
	}
	return nil
}
