package experiment

import (
	"context"
	"testing"
	"time"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// Dynamic sampling draws more prompts until P groups carry signal (at most MaxDraws), and still
// hands the trainer exactly P groups; without it a step draws P prompts.
func TestInformativeDrawsUntilGroupsCarrySignal(t *testing.T) {
	a := loadShipped(t)
	policy := a.freshPolicy(t)
	o := trainer.DefaultOptions()
	o.CFGWeight, o.ImageLogp = 3, config.ImageLogpConditional
	tr, err := trainer.NewTrainer(policy, o)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Trainer: tr, Codebook: a.cb, Reward: oracleReward(t), Train: a.eval, P: 3, G: 4, Seed: 7, Steps: 1,
		Sampling: bus.SamplingParams{Temperature: 1, CFGWeight: 3, MaxPlanTokens: 24, ImageLogp: config.ImageLogpConditional}}
	informative := func(gs []trainer.Group) int {
		n := 0
		for _, g := range gs {
			if spread(g.Rewards()) >= 0.05 {
				n++
			}
		}
		return n
	}
	vocab := tokenizer.New()
	plain, drawn, err := opts.collect(context.Background(), newDrawer(a.eval, 7), vocab, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) != 3 || drawn != 3 {
		t.Fatalf("plain: %d groups from %d prompts, want 3 and 3", len(plain), drawn)
	}
	opts.Informative, opts.MinSpread, opts.MaxDraws = true, 0.05, 12
	dyn, drawn, err := opts.collect(context.Background(), newDrawer(a.eval, 7), vocab, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dyn) != 3 || drawn < 3 || drawn > 12 {
		t.Fatalf("informative: %d groups from %d prompts, want 3 from 3..12", len(dyn), drawn)
	}
	if informative(dyn) < informative(plain) || (drawn < 12 && informative(dyn) != 3) {
		t.Fatalf("informative groups: %d dynamic (from %d prompts) vs %d plain", informative(dyn), drawn, informative(plain))
	}
	seen := map[int]bool{}
	for _, g := range dyn {
		if seen[g.Key.PromptIndex] {
			t.Fatalf("prompt %d twice in one step", g.Key.PromptIndex)
		}
		seen[g.Key.PromptIndex] = true
	}
	// A whole run: steps, a budget and the final evaluation.
	res, err := Run(context.Background(), Options{Trainer: tr, Codebook: a.cb, Reward: oracleReward(t), Train: a.eval, P: 2, G: 4,
		Seed: 1, Steps: 2, Budget: time.Hour, Eval: evaluate.LimitPerType(a.eval, 1), EvalOpts: evaluate.Options{G: 2, Seed: 1, CFGWeight: 3},
		Sampling: opts.Sampling})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 2 || len(res.Curve) != 2 || res.Curve[0].Step != 0 || res.Curve[1].Step != 2 || res.Steps[1].Stats.PolicyVersion != 2 {
		t.Fatalf("run: %d steps, curve %+v", len(res.Steps), res.Curve)
	}
}
