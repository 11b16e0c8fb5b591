package learner

import (
	"context"
	"fmt"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// resample answers a step whose complete groups all tied under grpo.filter_zero_std
// (trainer.ErrAllFiltered): the trainer refused to update, so the policy, its version and the
// optimizer are unchanged. The learner drops the round's groups, counts it, and asks the
// coordinator for fresh prompts for the same step (a step_resample event; the coordinator
// dispatches the next P prompts of the data cursor as round r of the step, with the current
// policy version). Up to max_resample_rounds rounds per step; beyond that the rewards are
// broken for this run and the learner stops with an error naming the step.
func (l *Learner) resample(ctx context.Context, step int64, groups []bus.Group) error {
	l.mu.Lock()
	round := l.acct.Resampled[step] + 1
	if round > l.cfg.MaxResampleRounds {
		l.mu.Unlock()
		return fmt.Errorf("%w (step %d: %d rounds of %d groups tied, max_resample_rounds %d)", trainer.ErrAllFiltered,
			step, round, len(groups), l.cfg.MaxResampleRounds)
	}
	l.acct.Resampled[step] = round
	keys := make([]string, 0, len(groups))
	for _, g := range groups {
		keys = append(keys, groupKey(g.Key))
	}
	l.dropped[step] = append(l.dropped[step], keys...)
	delete(l.complete, step)
	l.mu.Unlock()
	l.log.Warn().Int64("step", step).Int("round", round).Int("groups", len(groups)).
		Msg("every group of the step tied and was filtered (grpo.filter_zero_std): no update, asking for fresh prompts")
	if err := l.rep.EmitJSON(ctx, bus.EventStepResample, step, l.trainer.Version(), bus.ResampleRequest{Round: round, Dropped: keys},
		l.eventID(fmt.Sprintf("resample/%d/%d", step, round))); err != nil {
		return fmt.Errorf("ask for fresh prompts: %w", err)
	}
	return nil
}
