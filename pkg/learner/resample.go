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
// (keep), drops the tied and the stale ones, counts the round, and asks the
// coordinator for as many fresh prompts as the step lacks (a step_resample event; the
// coordinator dispatches the next prompts of the data cursor as round r of the step, with the
// current policy version, which the step has not advanced). trainStep calls it for up to
// max_resample_rounds rounds per step; after them the step trains on the informative groups it
// has, and when it has none the rewards are broken for this run: the learner stops with an
// error naming the step. Samples and rewards are deterministic, so a resumed run asks for the
// same rounds again.
func (l *Learner) resample(ctx context.Context, step int64, keep, tied, stale []trainer.Group) error {
	keys, round := l.dropRound(step, keep, tied, stale)
	count := l.cfg.PromptsPerStep - len(keep)
	l.log.Info().Int64("step", step).Int("round", round).Int("dropped", len(keys)).Int("kept", len(keep)).
		Int("asked", count).Msg("too few informative groups (grpo.filter_zero_std): no update yet, asking for fresh prompts")
	if err := l.rep.EmitJSON(ctx, bus.EventStepResample, step, l.trainer.Version(),
		bus.ResampleRequest{Round: round, Dropped: keys, Count: count},
		l.eventID(fmt.Sprintf("resample/%d/%d", step, round))); err != nil {
		return fmt.Errorf("ask for fresh prompts: %w", err)
	}
	return nil
}

// dropRound records a resample round of step: it counts the round, keeps only the groups in keep
// for the step, and drops the tied and stale groups - their keys are reported as consumed when
// the step is done, the tied ones counted in the step's FilteredGroups, the stale ones in
// Accounting.StaleGroups like those of a step trained at once. It returns the dropped keys and
// the round's number.
func (l *Learner) dropRound(step int64, keep, tied, stale []trainer.Group) (keys []string, round int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acct.Resampled[step]++
	keys = l.drop(step, tied)
	for _, g := range stale {
		keys = append(keys, groupKey(g.Key))
		l.dropped[step] = append(l.dropped[step], groupKey(g.Key))
	}
	l.acct.StaleGroups += len(stale)
	kept := make([]bus.Group, len(keep))
	for i, g := range keep {
		kept[i] = bus.Group(g)
	}
	l.complete[step] = kept
	return keys, l.acct.Resampled[step]
}

// drop records step's tied groups as dropped by the filter; l.mu is held.
func (l *Learner) drop(step int64, tied []trainer.Group) []string {
	keys := make([]string, 0, len(tied))
	for _, g := range tied {
		keys = append(keys, groupKey(g.Key))
	}
	l.dropped[step] = append(l.dropped[step], keys...)
	l.filtered[step] += len(tied)
	return keys
}
