package bus

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// GroupKey names a group: the G samples of one prompt at one step.
type GroupKey struct {
	Step        int64
	PromptIndex int
}

// Group is a complete group, samples ordered by SampleIndex.
type Group struct {
	Key     GroupKey
	Samples []ScoredSample
}

// Rewards returns the group's rewards in sample order (the input of grpo.ComputeAdvantages).
func (g Group) Rewards() []float64 {
	out := make([]float64, len(g.Samples))
	for i, s := range g.Samples {
		out[i] = s.Reward
	}
	return out
}

// Collector assembles scored samples into groups on the learner: it keys every sample by
// (step, prompt, sample), drops duplicates (redeliveries, re-dispatched batches), and releases a
// group only when all G samples are there, so training never sees a partial group. Safe for
// concurrent use by several fetchers.
type Collector struct {
	run string
	// MaxPartial bounds the incomplete groups held (0: no bound); a sample that would start one
	// more gets ErrCollectorFull, to be retried once groups complete.
	MaxPartial int

	mu       sync.Mutex
	partial  map[GroupKey]map[int]ScoredSample
	complete map[GroupKey]bool
}

// ErrCollectorFull: the collector holds MaxPartial incomplete groups already.
var ErrCollectorFull = errors.New("collector full")

// NewCollector returns an empty collector for a run.
func NewCollector(run string) *Collector {
	return &Collector{run: run, partial: map[GroupKey]map[int]ScoredSample{}, complete: map[GroupKey]bool{}}
}

// Add records s. It returns the group when s completes it, dup = true when s (or its whole group)
// was already seen, and an error for a sample of another run or whose group size disagrees with
// the samples already held.
func (c *Collector) Add(s ScoredSample) (g *Group, dup bool, err error) {
	if s.Run != c.run {
		return nil, false, fmt.Errorf("collector of run %s: sample %s belongs to run %s", c.run, s.Key(), s.Run)
	}
	if s.G < 1 || s.SampleIndex < 0 || s.SampleIndex >= s.G {
		return nil, false, fmt.Errorf("collector: sample %s: index %d outside group of %d", s.Key(), s.SampleIndex, s.G)
	}
	k := GroupKey{Step: s.Step, PromptIndex: s.PromptIndex}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.complete[k] {
		return nil, true, nil
	}
	held := c.partial[k]
	if held == nil {
		if c.MaxPartial > 0 && len(c.partial) >= c.MaxPartial {
			return nil, false, fmt.Errorf("%w: %d incomplete groups held; sample %s starts another", ErrCollectorFull, len(c.partial), s.Key())
		}
		held = map[int]ScoredSample{}
		c.partial[k] = held
	}
	for _, other := range held {
		if other.G != s.G {
			return nil, false, fmt.Errorf("collector: sample %s says group size %d, earlier samples %d", s.Key(), s.G, other.G)
		}
		// A group is G samples of one prompt: a sample under its key with another prompt would
		// be trained with the group's advantages against the wrong text.
		if other.Prompt.Prompt != s.Prompt.Prompt {
			return nil, false, fmt.Errorf("collector: sample %s has prompt %q, earlier samples of its group %q", s.Key(), s.Prompt.Prompt, other.Prompt.Prompt)
		}
		break
	}
	if _, ok := held[s.SampleIndex]; ok {
		return nil, true, nil
	}
	held[s.SampleIndex] = s
	if len(held) < s.G {
		return nil, false, nil
	}
	grp := &Group{Key: k, Samples: make([]ScoredSample, 0, s.G)}
	for _, x := range held {
		grp.Samples = append(grp.Samples, x)
	}
	sort.Slice(grp.Samples, func(i, j int) bool { return grp.Samples[i].SampleIndex < grp.Samples[j].SampleIndex })
	delete(c.partial, k)
	c.complete[k] = true
	return grp, false, nil
}

// Missing lists the incomplete groups with the sample indices still missing, for re-dispatch.
func (c *Collector) Missing() map[GroupKey][]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[GroupKey][]int{}
	for k, held := range c.partial {
		var g int
		for _, s := range held {
			g = s.G
			break
		}
		for i := range g {
			if _, ok := held[i]; !ok {
				out[k] = append(out[k], i)
			}
		}
	}
	return out
}

// Forget drops all state of steps before step (their groups were trained or abandoned); later
// duplicates of those steps are then reported as new, so callers also drop samples older than
// their staleness bound.
func (c *Collector) Forget(before int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.partial {
		if k.Step < before {
			delete(c.partial, k)
		}
	}
	for k := range c.complete {
		if k.Step < before {
			delete(c.complete, k)
		}
	}
}
