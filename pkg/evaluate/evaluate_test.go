package evaluate

import (
	"context"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/oracle"
	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/vq"
)

func shipped(t *testing.T) (*model.Model, *vq.Codebook, []prompts.Prompt) {
	t.Helper()
	b, err := mlx.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.LoadFile(b, "../../models/base.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := vq.Load("../../models/codebook.vq")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := prompts.ReadFile("../../data/prompts/eval.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return m, cb, ps
}

// One prompt per task type, G = 2: every sample is observed once, in order, the figures are
// fractions, and a second run gives the same numbers (fixed seeds).
func TestRunObservesEverySampleAndRepeats(t *testing.T) {
	m, cb, ps := shipped(t)
	var seen []Sample
	o := Options{LimitPerType: 1, G: 2, Seed: 3, CFGWeight: 3, Batch: 4,
		Observe: func(s Sample) error { seen = append(seen, s); return nil }}
	r, err := Run(m, cb, ps, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Prompts != len(prompts.TaskTypes) || r.N != 2*r.Prompts || len(seen) != r.N || len(r.TaskTypes) != r.Prompts {
		t.Fatalf("%d prompts, %d samples, %d observed, %d task types", r.Prompts, r.N, len(seen), len(r.TaskTypes))
	}
	if len(r.PromptScores) != r.Prompts {
		t.Fatalf("%d prompt scores for %d prompts", len(r.PromptScores), r.Prompts)
	}
	for i, ps := range r.PromptScores {
		if want := (seen[2*i].Score + seen[2*i+1].Score) / 2; math.Abs(ps-want) > 1e-12 {
			t.Fatalf("prompt %d score %v, want the mean of its samples %v", i, ps, want)
		}
	}
	follows := 0
	for i, s := range seen {
		if s.PromptIndex != i/2 || s.Index != i%2 || s.Image == nil || s.Prompt.Prompt == "" {
			t.Fatalf("sample %d: prompt %d index %d", i, s.PromptIndex, s.Index)
		}
		if s.FollowsPlan {
			follows++
			if s.Drawn == "" {
				t.Fatalf("sample %d follows its plan %q but nothing was drawn", i, s.Plan)
			}
		}
	}
	for name, v := range map[string]float64{"mean": r.Mean, "plan quality": r.PlanQuality, "diversity": r.Diversity,
		"plan parse": r.PlanParse, "image follows plan": r.ImageFollowsPlan} {
		if !(v >= 0 && v <= 1) {
			t.Fatalf("%s = %v", name, v)
		}
	}
	if follows == 0 || r.ImageFollowsPlan == 0 {
		t.Fatalf("no image of the shipped base follows its plan (%d, %v)", follows, r.ImageFollowsPlan)
	}
	o.Observe = nil
	again, err := Run(m, cb, ps, o)
	if err != nil {
		t.Fatal(err)
	}
	again.Seconds, r.Seconds = 0, 0
	if !reflect.DeepEqual(again, r) {
		t.Fatalf("second run differs:\n%+v\n%+v", again, r)
	}
	// --no-plan: nothing parses, nothing follows.
	o.NoPlan = true
	np, err := Run(m, cb, ps, o)
	if err != nil {
		t.Fatal(err)
	}
	if np.PlanParse != 0 || np.ImageFollowsPlan != 0 {
		t.Fatalf("no-plan run: parse %v follows %v", np.PlanParse, np.ImageFollowsPlan)
	}
	// Exclusive cells: no plan puts two objects in one cell, where the shipped base's plans do.
	shared := func(exclusive bool) int {
		t.Helper()
		n := 0
		o.NoPlan, o.ExclusiveCells, o.LimitPerType = false, exclusive, 4
		o.Observe = func(s Sample) error {
			if _, err := plan.Parse(s.Plan, cb.Config()); err != nil && strings.Contains(err.Error(), "already taken") {
				n++
			}
			return nil
		}
		if _, err := Run(m, cb, ps, o); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := shared(false); n == 0 {
		t.Fatal("no plan of the shipped base puts two objects in one cell: the next check proves nothing")
	}
	if n := shared(true); n != 0 {
		t.Fatalf("exclusive cells: %d plans put two objects in one cell", n)
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	m, cb, ps := shipped(t)
	noSpec := []prompts.Prompt{{Prompt: "a red circle", TaskType: "color"}}
	for name, tc := range map[string]struct {
		ps   []prompts.Prompt
		o    Options
		want string
	}{
		"g":       {ps, Options{G: 0}, "g 0"},
		"cfg":     {ps, Options{G: 1, CFGWeight: math.NaN()}, "cfg"},
		"empty":   {nil, Options{G: 1}, "no prompts"},
		"no spec": {noSpec, Options{G: 1}, "no spec"},
	} {
		if _, err := Run(m, cb, tc.ps, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

func TestLimitPerType(t *testing.T) {
	ps := []prompts.Prompt{{TaskType: "a"}, {TaskType: "b"}, {TaskType: "a"}, {TaskType: "a"}, {TaskType: "b"}}
	if got := LimitPerType(ps, 2); len(got) != 4 || got[2].TaskType != "a" || got[3].TaskType != "b" {
		t.Fatalf("%+v", got)
	}
	if got := LimitPerType(ps, 0); len(got) != 5 {
		t.Fatalf("limit 0 kept %d", len(got))
	}
}

// oracleBackend scores an image with the oracle itself, flipped when invert is set: a reward
// whose within-group ranking is known exactly.
type oracleBackend struct {
	cfg    scene.Config
	invert bool
}

func (b oracleBackend) Output() reward.Output { return reward.OutputScore }

func (b oracleBackend) Infer(_ context.Context, qs []reward.Query) ([]reward.Raw, error) {
	out := make([]reward.Raw, len(qs))
	for i, q := range qs {
		r, err := oracle.Score(b.cfg, q.Prompt, q.Image)
		if err != nil {
			return nil, err
		}
		v := r.Score
		if b.invert {
			v = 1 - v
		}
		out[i].Score = &v
	}
	return out, nil
}

type scoreRule struct{}

func (scoreRule) Output() reward.Output                                  { return reward.OutputScore }
func (scoreRule) Shortcut(prompts.Prompt) (float64, bool)                { return 0, false }
func (scoreRule) Questions(prompts.Prompt) []string                      { return nil }
func (scoreRule) Reward(_ prompts.Prompt, r reward.Raw) (float64, error) { return *r.Score, nil }

// An expert that is the oracle ranks every group exactly as the oracle does (+1), its mirror
// image exactly the other way (-1); the ensemble of both is constant, which counts as 0.
func TestRewardAlignmentOfKnownRewards(t *testing.T) {
	m, cb, ps := shipped(t)
	ens, err := reward.NewEnsemble(
		reward.Expert{Name: "same", Backend: oracleBackend{cfg: cb.Config()}, Rule: scoreRule{}, Weight: 1},
		reward.Expert{Name: "mirror", Backend: oracleBackend{cfg: cb.Config(), invert: true}, Rule: scoreRule{}, Weight: 1})
	if err != nil {
		t.Fatal(err)
	}
	a, err := RewardAlignment(context.Background(), m, cb, ps, ens, Options{LimitPerType: 2, G: 4, Seed: 2, CFGWeight: 3}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if a.Prompts != 2*len(prompts.TaskTypes) || a.Samples != 4*a.Prompts || len(a.Groups) == 0 {
		t.Fatalf("alignment %+v", a)
	}
	if got := a.Names(); len(got) != 3 || got[0] != Total || got[1] != "mirror" || got[2] != "same" {
		t.Fatalf("names %v", got)
	}
	const eps = 1e-9
	if math.Abs(a.Overall["same"]-1) > eps || math.Abs(a.Overall["mirror"]+1) > eps || math.Abs(a.Overall[Total]) > eps {
		t.Fatalf("overall %v, want same 1, mirror -1, total 0", a.Overall)
	}
	for task, byName := range a.Spearman {
		if math.Abs(byName["same"]-1) > eps || a.Groups[task] < 1 {
			t.Fatalf("%s: %v over %d groups", task, byName, a.Groups[task])
		}
	}
	if _, err := RewardAlignment(context.Background(), m, cb, ps, ens, Options{G: 1}, 0); err == nil {
		t.Fatal("g 1 accepted")
	}
}

func TestCompare(t *testing.T) {
	a := Result{PromptScores: []float64{0.1, 0.5, 0.9, 0.3}}
	b := Result{PromptScores: []float64{0.2, 0.6, 1.0, 0.4}}
	d, h, err := Compare(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(d-0.1) > 1e-12 || h > 1e-9 {
		t.Fatalf("constant shift: delta %v half-width %v, want 0.1 and 0", d, h)
	}
	b.PromptScores = []float64{0.3, 0.5, 0.9, 0.3}
	d, h, err = Compare(a, b)
	if err != nil {
		t.Fatal(err)
	}
	// differences 0.2, 0, 0, 0: mean 0.05, sd 0.1, se 0.05
	if math.Abs(d-0.05) > 1e-12 || math.Abs(h-1.96*0.05) > 1e-9 {
		t.Fatalf("delta %v half-width %v, want 0.05 and %v", d, h, 1.96*0.05)
	}
	if _, _, err := Compare(a, Result{PromptScores: []float64{1}}); err == nil {
		t.Fatal("different prompt counts compared")
	}
}

func TestPairwiseDistance(t *testing.T) {
	same := [][]int{{1, 2, 3, 4}, {1, 2, 3, 4}, {1, 2, 3, 4}}
	if d := pairwiseDistance(same); d != 0 {
		t.Fatalf("identical images: %v, want 0", d)
	}
	// pairs: (0,1) differ in 1 of 4, (0,2) in 4, (1,2) in 4 -> (0.25 + 1 + 1) / 3
	mixed := [][]int{{1, 2, 3, 4}, {1, 2, 3, 5}, {9, 9, 9, 9}}
	if d := pairwiseDistance(mixed); math.Abs(d-2.25/3) > 1e-12 {
		t.Fatalf("distance %v, want %v", d, 2.25/3)
	}
	if d := pairwiseDistance(mixed[:1]); d != 0 {
		t.Fatalf("one image: %v", d)
	}
}
