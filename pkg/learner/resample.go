package learner

import (
	"context"
	"fmt"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// resample answers a step with fewer than P informative groups under grpo.filter_zero_std
// (DAPO's dynamic sampling): the groups whose rewards tie (or span less than min_spread) teach
// nothing, so instead of an update on what is left the learner keeps the informative groups
// (keep), drops the others (drop: tied, and stale ones), counts the round, and asks the
// coordinator for as many fresh prompts as the step lacks (a step_resample event; the
// coordinator dispatches the next prompts of the data cursor as round r of the step, with the
// current policy version, which the step has not advanced). trainStep calls it for up to
// max_resample_rounds rounds per step; after them the step trains on the informative groups it
// has, and when it has none the rewards are broken for this run: the learner stops with an
// error naming the step. Samples and rewards are deterministic, so a resumed run asks for the
// same rounds again.
func (l *Learner) resample(ctx context.Context, step int64, keep, drop []trainer.Group) error {
	l.mu.Lock()
	round := l.acct.Resampled[step] + 1
	l.acct.Resampled[step] = round
	keys := make([]string, 0, len(drop))
	for _, g := range drop {
		keys = append(keys, groupKey(g.Key))
	}
	l.dropped[step] = append(l.dropped[step], keys...)
	kept := make([]bus.Group, len(keep))
	for i, g := range keep {
		kept[i] = bus.Group(g)
	}
	l.complete[step] = kept
	l.mu.Unlock()
	count := l.cfg.PromptsPerStep - len(keep)
	l.log.Info().Int64("step", step).Int("round", round).Int("dropped", len(drop)).Int("kept", len(keep)).
		Int("asked", count).Msg("too few informative groups (grpo.filter_zero_std): no update yet, asking for fresh prompts")
	if err := l.rep.EmitJSON(ctx, bus.EventStepResample, step, l.trainer.Version(),
		bus.ResampleRequest{Round: round, Dropped: keys, Count: count},
		l.eventID(fmt.Sprintf("resample/%d/%d", step, round))); err != nil {
		return fmt.Errorf("ask for fresh prompts: %w", err)
	}
	return nil
}
