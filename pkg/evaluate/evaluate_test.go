package evaluate

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
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
