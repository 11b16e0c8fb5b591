package trainer

import (
	"testing"

	"github.com/bicot-rl/bicot/pkg/model"
)

// evalReward is the mean reward of 4 prompts x 16 samples with fixed seeds.
func evalReward(t *testing.T, m *model.Model, reward func(model.Sample) float64) float64 {
	t.Helper()
	gs := rollout{step: 1000, g: 16, maxPlan: 3, seed: 99, promptIDs: []int{0, 1, 2, 3}, reward: reward}.groups(t, m)
	var sum float64
	n := 0
	for _, g := range gs {
		for _, s := range g.Samples {
			sum += s.Reward
			n++
		}
	}
	return sum / float64(n)
}

// Learning happens: with the default options (learning rate included) a tiny policy rewarded for
// drawing image code 3 draws it clearly more often after 30 on-policy steps of 2 prompts x 8.
func TestLearnsTargetCode(t *testing.T) {
	cfg := tinyConfig()
	d := model.DefaultConfig()
	cfg.DModel, cfg.Heads, cfg.Layers, cfg.FF = d.DModel, d.Heads, d.Layers, d.FF
	m := newPolicy(t, cfg, 7)
	reward := targetReward(3)
	o := DefaultOptions()
	o.BatchSize = 16
	tr := mustTrainer(t, m, o)
	before := evalReward(t, m, reward)
	var last StepStats
	for step := 0; step < 30; step++ {
		gs := rollout{step: int64(step), version: tr.Version(), g: 8, maxPlan: 3, seed: 11, promptIDs: []int{step % 4, (step + 1) % 4}, reward: reward}.groups(t, m)
		st, err := tr.Step(gs)
		if err != nil {
			t.Fatal(err)
		}
		last = st
		if step%5 == 0 {
			t.Logf("step %d: reward %.3f kl %.5f loss %.4f grad %.3f", step, st.RewardMean, st.KL, st.Loss, st.GradNorm)
		}
	}
	after := evalReward(t, m, reward)
	t.Logf("eval reward %.3f -> %.3f, last kl %.5f", before, after, last.KL)
	if !(after > before+0.15) {
		t.Fatalf("eval reward %.3f -> %.3f after 30 steps, want an increase > 0.15", before, after)
	}
}
