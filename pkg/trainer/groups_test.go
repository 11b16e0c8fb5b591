package trainer

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/model"
)

// A group whose rewards all tie has zero advantage and counts in zero_std_ratio; with DAPO
// filtering it is dropped, and a batch of only tied groups trains nothing.
func TestTiedGroups(t *testing.T) {
	m := newPolicy(t, tinyConfig(), 3)
	r := rollout{g: 4, maxPlan: 3, seed: 1, promptIDs: []int{0, 1}, reward: func(s model.Sample) float64 {
		if s.Prompt == 1 {
			return 0.5 // prompt 1's group ties
		}
		return float64(s.Index)
	}}
	groups := r.groups(t, m)

	o := DefaultOptions()
	o.BatchSize = 8
	tr := mustTrainer(t, m, o)
	st, err := tr.Step(groups)
	if err != nil {
		t.Fatal(err)
	}
	if st.ZeroStdRatio != 0.5 || st.GroupsUsed != 2 || st.GroupsFiltered != 0 || st.Samples != 8 {
		t.Fatalf("unfiltered: zero_std_ratio %g used %d filtered %d samples %d", st.ZeroStdRatio, st.GroupsUsed, st.GroupsFiltered, st.Samples)
	}
	// |A| averages over 8 samples, 4 of which (the tied group) are exactly 0.
	_, byHand := advAbs(t, groups[0].Rewards())
	if d := st.AdvAbsMean - byHand/2; d > 1e-12 || d < -1e-12 {
		t.Fatalf("adv_abs_mean %g, want %g (tied group contributes zeros)", st.AdvAbsMean, byHand/2)
	}

	o.FilterZeroStd = true
	m2 := newPolicy(t, tinyConfig(), 3)
	tr2 := mustTrainer(t, m2, o)
	st, err = tr2.Step(groups)
	if err != nil {
		t.Fatal(err)
	}
	if st.ZeroStdRatio != 0.5 || st.GroupsUsed != 1 || st.GroupsFiltered != 1 || st.Samples != 4 {
		t.Fatalf("filtered: zero_std_ratio %g used %d filtered %d samples %d", st.ZeroStdRatio, st.GroupsUsed, st.GroupsFiltered, st.Samples)
	}
	before, err := tr2.Weights()
	if err != nil {
		t.Fatal(err)
	}
	st, err = tr2.Step(rollout{version: 1, g: 4, maxPlan: 3, seed: 1, promptIDs: []int{2}, reward: func(model.Sample) float64 { return 1 }}.groups(t, m2))
	if !errors.Is(err, ErrAllFiltered) || st.ZeroStdRatio != 1 || st.GroupsUsed != 0 {
		t.Fatalf("all tied and filtered: err %v, stats %+v", err, st)
	}
	after, err := tr2.Weights()
	if err != nil {
		t.Fatal(err)
	}
	if tr2.Version() != 1 || string(before) != string(after) {
		t.Fatalf("a filtered-out batch changed the policy (version %d)", tr2.Version())
	}
}

// Informative splits groups as the update would filter them: exact ties and spreads under
// min_spread are tied, the rest informative; without the filter every group is informative.
func TestInformative(t *testing.T) {
	m := newPolicy(t, tinyConfig(), 3)
	r := rollout{g: 4, maxPlan: 3, seed: 1, promptIDs: []int{0, 1, 2}, reward: func(s model.Sample) float64 {
		switch s.Prompt {
		case 1:
			return 0.5 // ties exactly
		case 2:
			return 0.5 + 0.01*float64(s.Index) // spans 0.03, under min_spread 0.05
		}
		return float64(s.Index)
	}}
	groups := r.groups(t, m)
	o := DefaultOptions()
	o.BatchSize = 12
	o.MinSpread = 0.05
	inf, tied, err := mustTrainer(t, m, o).Informative(groups)
	if err != nil || len(inf) != 3 || len(tied) != 0 {
		t.Fatalf("no filter: %d informative, %d tied, %v; want all 3 informative", len(inf), len(tied), err)
	}
	o.FilterZeroStd = true
	inf, tied, err = mustTrainer(t, m, o).Informative(groups)
	if err != nil {
		t.Fatal(err)
	}
	keys := func(gs []Group) (out []int) {
		for _, g := range gs {
			out = append(out, g.Key.PromptIndex)
		}
		return out
	}
	if !slices.Equal(keys(inf), []int{groups[0].Key.PromptIndex}) ||
		!slices.Equal(keys(tied), []int{groups[1].Key.PromptIndex, groups[2].Key.PromptIndex}) {
		t.Fatalf("filter on: informative %v tied %v, want prompt 0 informative, 1 and 2 tied", keys(inf), keys(tied))
	}
	groups[0].Samples[1].Reward = math.NaN()
	if _, _, err := mustTrainer(t, m, o).Informative(groups); err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Fatalf("a NaN reward: %v, want an error naming it", err)
	}
}

func advAbs(t *testing.T, rewards []float64) ([]float64, float64) {
	t.Helper()
	var mean, ss float64
	for _, r := range rewards {
		mean += r
	}
	mean /= float64(len(rewards))
	for _, r := range rewards {
		ss += (r - mean) * (r - mean)
	}
	std := sqrt(ss / float64(len(rewards)-1))
	out := make([]float64, len(rewards))
	var sum float64
	for i, r := range rewards {
		out[i] = (r - mean) / (std + 1e-4)
		sum += abs(out[i])
	}
	return out, sum / float64(len(rewards))
}

// Partial, duplicated, mixed-up or foreign groups are refused, naming what is wrong.
func TestGroupsRefused(t *testing.T) {
	m := newPolicy(t, tinyConfig(), 4)
	groups := rollout{g: 4, maxPlan: 3, seed: 2, promptIDs: []int{0, 1}, reward: func(s model.Sample) float64 { return float64(s.Index) }}.groups(t, m)
	var flat []bus.ScoredSample
	for _, g := range groups {
		flat = append(flat, g.Samples...)
	}
	check := func(name string, samples []bus.ScoredSample, want string) {
		t.Helper()
		_, err := GroupsFromScored(samples)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, want)
		}
	}
	check("partial", flat[1:], "partial")
	check("duplicate", append(append([]bus.ScoredSample{}, flat...), flat[2]), "appears twice")
	wrongG := append([]bus.ScoredSample{}, flat...)
	wrongG[0].G = 5
	check("group size", wrongG, "group size")
	otherPrompt := append([]bus.ScoredSample{}, flat...)
	otherPrompt[1].Prompt.Prompt = testPrompts[2]
	check("prompt text", otherPrompt, "has prompt")
	otherRun := append([]bus.ScoredSample{}, flat...)
	otherRun[3].Run = "other"
	check("run", otherRun, "run")
	if _, err := GroupsFromScored(nil); err == nil {
		t.Error("no samples accepted")
	}

	o := DefaultOptions()
	o.BatchSize = 8
	tr := mustTrainer(t, m, o)
	partial := []Group{groups[0], {Key: groups[1].Key, Samples: groups[1].Samples[:3]}}
	if _, err := tr.Step(partial); err == nil || !strings.Contains(err.Error(), "partial") {
		t.Errorf("Step on a partial group: %v", err)
	}
	swapped := []Group{groups[0], {Key: groups[1].Key, Samples: append([]bus.ScoredSample{}, groups[1].Samples...)}}
	swapped[1].Samples[0], swapped[1].Samples[1] = swapped[1].Samples[1], swapped[1].Samples[0]
	if _, err := tr.Step(swapped); err == nil || !strings.Contains(err.Error(), "holds sample index") {
		t.Errorf("Step on an unordered group: %v", err)
	}
	if _, err := tr.Step([]Group{groups[0], groups[0]}); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("Step with a group twice: %v", err)
	}
	small := DefaultOptions()
	small.BatchSize = 4
	tr4 := mustTrainer(t, newPolicy(t, tinyConfig(), 4), small)
	if _, err := tr4.Step(groups); err == nil || !strings.Contains(err.Error(), "batch_size") {
		t.Errorf("Step over the batch size: %v", err)
	}
	unknown := []Group{{Key: groups[0].Key, Samples: append([]bus.ScoredSample{}, groups[0].Samples...)}}
	for i := range unknown[0].Samples {
		unknown[0].Samples[i].Prompt.Prompt = "a zebra"
	}
	if _, err := tr.Step(unknown); err == nil || !strings.Contains(err.Error(), "zebra") {
		t.Errorf("Step with an unknown prompt word: %v", err)
	}
	if tr.Version() != 0 {
		t.Errorf("refused steps advanced the version to %d", tr.Version())
	}
}

// Samples more than MaxStaleness versions behind are refused with a StaleError naming them; with
// k = 1 and clipping they are trained, and their ratio is no longer 1.
func TestStaleness(t *testing.T) {
	m := newPolicy(t, tinyConfig(), 6)
	r := rollout{g: 4, maxPlan: 3, seed: 3, promptIDs: []int{0, 1}, reward: targetReward(2)}
	old := r.groups(t, m) // version 0

	o := DefaultOptions()
	o.BatchSize = 8
	o.Optimizer.LR = 1e-2 // a large step, so the version-0 samples are clearly off-policy after it
	tr := mustTrainer(t, m, o)
	if _, err := tr.Step(old); err != nil {
		t.Fatal(err)
	}
	_, err := tr.Step(old)
	var se *StaleError
	if !errors.As(err, &se) || len(se.Samples) != 8 || se.Version != 1 || !strings.Contains(err.Error(), old[0].Samples[0].Key()) {
		t.Fatalf("k=0, samples one version behind: %v", err)
	}
	if fresh, stale := tr.Partition(old); len(fresh) != 0 || len(stale) != 2 {
		t.Fatalf("partition: %d fresh, %d stale", len(fresh), len(stale))
	}
	future := rollout{version: 5, g: 4, maxPlan: 3, seed: 3, promptIDs: []int{2}, reward: targetReward(2)}.groups(t, m)
	if _, err := tr.Step(future); !errors.As(err, &se) {
		t.Fatalf("sample from a future version: %v", err)
	}

	o.MaxStaleness = 1
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "clip") {
		t.Fatalf("k=1 without clipping validated: %v", err)
	}
	o.Loss.Clip = true
	m1 := newPolicy(t, tinyConfig(), 6)
	tr1 := mustTrainer(t, m1, o)
	if _, err := tr1.Step(old); err != nil {
		t.Fatal(err)
	}
	st, err := tr1.Step(old) // one version behind: accepted
	if err != nil {
		t.Fatal(err)
	}
	if st.MaxStaleness != 1 || st.RatioMin == st.RatioMax || st.PolicyVersion != 2 {
		t.Fatalf("k=1: stats %+v", st)
	}
	if _, err := tr1.Step(old); !errors.As(err, &se) { // two behind
		t.Fatalf("k=1, two versions behind: %v", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Options){
		"batch_size":      func(o *Options) { o.BatchSize = 0 },
		"max_staleness":   func(o *Options) { o.MaxStaleness = -1 },
		"cfg_weight":      func(o *Options) { o.CFGWeight = nan() },
		"temperature":     func(o *Options) { o.Temperature = -1 },
		"beta":            func(o *Options) { o.Loss.Beta = -1 },
		"lr":              func(o *Options) { o.Optimizer.LR = 0 },
		"norm":            func(o *Options) { o.Loss.Norm = "median" },
		"initial_version": func(o *Options) { o.InitialVersion = -2 },
		"std eps":         func(o *Options) { o.StdEps = -1 },
	} {
		o := DefaultOptions()
		edit(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v", name, err)
		}
		if _, err := NewTrainer(newPolicy(t, tinyConfig(), 1), o); err == nil {
			t.Errorf("%s: NewTrainer accepted invalid options", name)
		}
	}
	cfg := tinyConfig()
	cfg.TextVocab++
	if _, err := NewTrainer(newPolicy(t, cfg, 1), DefaultOptions()); err == nil || !strings.Contains(err.Error(), "tokenizer") {
		t.Errorf("policy with a foreign text vocabulary: %v", err)
	}
}

// Groups assembled by the bus collector (shuffled, with a redelivered duplicate) convert to
// learn.Group and train.
func TestCollectorGroupsTrain(t *testing.T) {
	m := newPolicy(t, tinyConfig(), 10)
	groups := rollout{g: 4, maxPlan: 3, seed: 6, promptIDs: []int{2, 3}, reward: func(s model.Sample) float64 { return float64(s.Index % 2) }}.groups(t, m)
	var flat []bus.ScoredSample
	for _, g := range groups {
		flat = append(flat, g.Samples...)
	}
	order := []int{5, 0, 7, 3, 3, 1, 6, 2, 4}
	col := bus.NewCollector("test")
	var got []Group
	for _, i := range order {
		g, _, err := col.Add(flat[i])
		if err != nil {
			t.Fatal(err)
		}
		if g != nil {
			got = append(got, Group(*g))
		}
	}
	if len(got) != 2 {
		t.Fatalf("%d complete groups", len(got))
	}
	o := DefaultOptions()
	o.BatchSize = 8
	st, err := mustTrainer(t, m, o).Step(got)
	if err != nil {
		t.Fatal(err)
	}
	if st.Samples != 8 || st.GroupsUsed != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// The level switch trains one CoT level only: the other level's head does not move at all
// (Adam's step is exactly 0 where the gradient is 0 and weight decay is off).
func TestLevelSwitch(t *testing.T) {
	for _, tc := range []struct {
		level          config.Level
		frozen, moving string
	}{{config.LevelPlan, "image_head", "text_head"}, {config.LevelImage, "text_head", "image_head"}} {
		m := newPolicy(t, tinyConfig(), 11)
		favourEOS(t, m, 4)
		groups := rollout{g: 4, maxPlan: 4, seed: 7, promptIDs: []int{0, 1}, reward: targetReward(1)}.groups(t, m)
		o := DefaultOptions()
		o.BatchSize = 8
		o.Loss.Level = tc.level
		head := func(name string) []float32 {
			v := m.Ctx.GetVariableByScopeAndName("/"+model.Scope+"/"+name+"/dense", "weights")
			return tensors.MustCopyFlatData[float32](v.MustValue())
		}
		frozen, moving := head(tc.frozen), head(tc.moving)
		st, err := mustTrainer(t, m, o).Step(groups)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(head(tc.frozen), frozen) || slices.Equal(head(tc.moving), moving) {
			t.Errorf("level %s: %s changed or %s did not", tc.level, tc.frozen, tc.moving)
		}
		if (tc.level == config.LevelPlan) != (st.ImageTokens == 0) || (tc.level == config.LevelImage) != (st.PlanTokens == 0) {
			t.Errorf("level %s: plan tokens %d image tokens %d", tc.level, st.PlanTokens, st.ImageTokens)
		}
	}
}
