package learner

import (
	"slices"
	"testing"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// Each resample round keeps the informative groups for the step and drops the rest: all dropped
// keys are reported as consumed, the tied groups counted as filtered and the stale ones as stale
// groups, like the stale groups of a step trained at once; the tied groups of a step out of
// rounds are filtered too.
func TestDropRoundAccounting(t *testing.T) {
	l := &Learner{complete: map[int64][]bus.Group{}, dropped: map[int64][]string{}, filtered: map[int64]int{},
		acct: Accounting{Resampled: map[int64]int{}}}
	g := func(step int64, prompt int) trainer.Group {
		return trainer.Group{Key: bus.GroupKey{Step: step, PromptIndex: prompt}}
	}
	keys, round := l.dropRound(4, []trainer.Group{g(4, 0)}, []trainer.Group{g(4, 1), g(4, 2)}, []trainer.Group{g(3, 7)})
	if round != 1 || !slices.Equal(keys, []string{"4/1", "4/2", "3/7"}) {
		t.Fatalf("round %d dropped %v, want round 1 dropping 4/1 4/2 3/7", round, keys)
	}
	keys, round = l.dropRound(4, []trainer.Group{g(4, 0), g(4, 3)}, []trainer.Group{g(4, 4)}, nil)
	if round != 2 || !slices.Equal(keys, []string{"4/4"}) {
		t.Fatalf("round %d dropped %v, want round 2 dropping 4/4", round, keys)
	}
	if len(l.complete[4]) != 2 || l.complete[4][1].Key.PromptIndex != 3 {
		t.Errorf("step keeps %v, want the two informative groups of round 2", l.complete[4])
	}
	l.drop(4, []trainer.Group{g(4, 5)})
	if want := []string{"4/1", "4/2", "3/7", "4/4", "4/5"}; !slices.Equal(l.dropped[4], want) {
		t.Errorf("consumed keys %v, want %v", l.dropped[4], want)
	}
	if l.filtered[4] != 4 || l.acct.StaleGroups != 1 || l.acct.Resampled[4] != 2 {
		t.Errorf("filtered %d, stale %d, rounds %d; want 4, 1, 2", l.filtered[4], l.acct.StaleGroups, l.acct.Resampled[4])
	}
}
