package learner

import (
	"maps"
	"slices"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// Accounting is the learner's own record of what it received and trained.
type Accounting struct {
	// Received counts accepted (first-seen) samples per group.
	Received map[bus.GroupKey]int
	// Duplicates are samples dropped because their key was already held (redelivery, re-dispatch).
	Duplicates int
	// Late are samples of steps already learned.
	Late int
	// Superseded are samples of tasks handed out before the rewind that this learner's resume
	// caused (attempts below runstate.State.AttemptFloor): the run hands their prompts out again.
	Superseded int
	// StaleGroups were complete but outside the staleness bound, so not trained.
	StaleGroups int
	// Resampled counts, per step, the rounds that left fewer than P informative groups under
	// grpo.filter_zero_std, each answered with fresh prompts for the groups the step lacked.
	Resampled map[int64]int
	// Learned lists each step's trained groups.
	Learned map[int64][]LearnedGroup
	Stats   []trainer.StepStats
}

// LearnedGroup is one group a step trained on.
type LearnedGroup struct {
	PromptIndex int `json:"prompt_index"`
	Samples     int `json:"samples"`
	// SampleIndices as trained, in order.
	SampleIndices []int `json:"sample_indices"`
}

// Accounting returns a copy of the learner's record.
func (l *Learner) Accounting() Accounting {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.acct
	a.Received = maps.Clone(a.Received)
	a.Learned = map[int64][]LearnedGroup{}
	for k, v := range l.acct.Learned {
		a.Learned[k] = slices.Clone(v)
	}
	a.Stats = slices.Clone(a.Stats)
	return a
}
