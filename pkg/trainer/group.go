package trainer

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/bicot-rl/bicot/pkg/bus"
)

// Group is the G scored samples of one prompt at one step, ordered by sample index. It has the
// fields of bus.Group, so a collector's group converts with learn.Group(*g).
type Group struct {
	Key     bus.GroupKey
	Samples []bus.ScoredSample
}

// Rewards returns the rewards in sample order.
func (g Group) Rewards() []float64 {
	out := make([]float64, len(g.Samples))
	for i, s := range g.Samples {
		out[i] = s.Reward
	}
	return out
}

// Validate checks that the group is complete and consistent: G samples with indices exactly
// 0..G-1 in order, all of one run, step and prompt (index and text), all saying group size G,
// each valid on its own.
func (g Group) Validate() error {
	where := fmt.Sprintf("group step %d prompt %d", g.Key.Step, g.Key.PromptIndex)
	if len(g.Samples) == 0 {
		return fmt.Errorf("%s: no samples", where)
	}
	first := g.Samples[0]
	if first.G != len(g.Samples) {
		return fmt.Errorf("%s: %d samples for group size %d (partial or overfull group)", where, len(g.Samples), first.G)
	}
	for i := range g.Samples {
		s := &g.Samples[i]
		if err := s.Validate(); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		switch {
		case s.Step != g.Key.Step || s.PromptIndex != g.Key.PromptIndex:
			return fmt.Errorf("%s: sample %s belongs to step %d prompt %d", where, s.Key(), s.Step, s.PromptIndex)
		case s.Run != first.Run:
			return fmt.Errorf("%s: sample %s is of run %s, the group's is %s", where, s.Key(), s.Run, first.Run)
		case s.G != first.G:
			return fmt.Errorf("%s: sample %s says group size %d, sample 0 says %d", where, s.Key(), s.G, first.G)
		case s.SampleIndex != i:
			return fmt.Errorf("%s: position %d holds sample index %d (want indices 0..%d once each, in order)", where, i, s.SampleIndex, first.G-1)
		case s.Prompt.Prompt != first.Prompt.Prompt:
			return fmt.Errorf("%s: sample %s has prompt %q, sample 0 %q", where, s.Key(), s.Prompt.Prompt, first.Prompt.Prompt)
		}
	}
	return nil
}

// GroupsFromScored groups scored samples by (step, prompt index), orders each group by sample
// index and validates it. A missing, duplicate or out-of-range sample index is an error naming
// the group: training never sees a partial group. Groups come out ordered by step, then prompt.
func GroupsFromScored(samples []bus.ScoredSample) ([]Group, error) {
	if len(samples) == 0 {
		return nil, errors.New("groups: no samples")
	}
	byKey := map[bus.GroupKey][]bus.ScoredSample{}
	for _, s := range samples {
		k := bus.GroupKey{Step: s.Step, PromptIndex: s.PromptIndex}
		byKey[k] = append(byKey[k], s)
	}
	keys := make([]bus.GroupKey, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Step != keys[j].Step {
			return keys[i].Step < keys[j].Step
		}
		return keys[i].PromptIndex < keys[j].PromptIndex
	})
	out := make([]Group, 0, len(keys))
	for _, k := range keys {
		ss := byKey[k]
		seen := map[int]bool{}
		for _, s := range ss {
			if seen[s.SampleIndex] {
				return nil, fmt.Errorf("groups: step %d prompt %d: sample index %d appears twice", k.Step, k.PromptIndex, s.SampleIndex)
			}
			seen[s.SampleIndex] = true
		}
		sort.Slice(ss, func(i, j int) bool { return ss[i].SampleIndex < ss[j].SampleIndex })
		g := Group{Key: k, Samples: ss}
		if err := g.Validate(); err != nil {
			return nil, fmt.Errorf("groups: %w", err)
		}
		out = append(out, g)
	}
	return out, nil
}

// StaleError is returned by Step when samples fall outside the staleness bound: drawn with a
// policy more than MaxStaleness versions behind the trainer's, or with a version the trainer has
// not reached (a sample from the future means a mixed-up run or a learner restored from an older
// checkpoint). Nothing was trained; drop the named samples' groups (Trainer.Partition does it)
// and call Step again.
type StaleError struct {
	Version      int64 // the trainer's version
	MaxStaleness int64
	// Samples are the offending samples' keys with the version each was drawn with.
	Samples []StaleSample
}

// StaleSample names one refused sample.
type StaleSample struct {
	Key           string
	PolicyVersion int64
}

func (e *StaleError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "learner at policy version %d (max staleness %d) refuses %d sample(s):", e.Version, e.MaxStaleness, len(e.Samples))
	for i, s := range e.Samples {
		if i == 8 {
			fmt.Fprintf(&b, " ... and %d more", len(e.Samples)-i)
			break
		}
		fmt.Fprintf(&b, " %s (v%d)", s.Key, s.PolicyVersion)
	}
	return b.String()
}

// fresh reports whether a sample drawn with version v may be trained at trainer version cur.
func fresh(v, cur, k int64) bool { return v <= cur && cur-v <= k }
