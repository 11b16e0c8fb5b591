package trainer

import (
	"testing"

	"github.com/bicot-rl/bicot/pkg/model"
)

// benchConfig is the policy the system ships with.
func benchConfig(b *testing.B) model.Config {
	// The shipped base policy's configuration (sizes, text length, learning aids).
	c, err := model.LoadConfig("../../models/base.json")
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkStep times one update of the default-sized policy on 4 prompts x 8 samples drawn with
// guidance (the rollout shape): reference scoring plus the train step, sampling excluded.
// Samples are re-stamped with the trainer's version so every step is on-policy in form.
func BenchmarkStep(b *testing.B) {
	for _, cfgW := range []float64{0, 3} {
		name := "cfg0"
		if cfgW != 0 {
			name = "cfg3"
		}
		b.Run(name, func(b *testing.B) {
			m := newPolicy(b, benchConfig(b), 1)
			o := DefaultOptions()
			o.CFGWeight = cfgW
			tr := mustTrainer(b, m, o)
			groups := rollout{g: 8, cfg: cfgW, maxPlan: 12, seed: 1, promptIDs: []int{0, 1, 2, 3}, reward: targetReward(0)}.groups(b, m)
			step := func() {
				for gi := range groups {
					for si := range groups[gi].Samples {
						groups[gi].Samples[si].PolicyVersion = tr.Version()
					}
				}
				if _, err := tr.Step(groups); err != nil {
					b.Fatal(err)
				}
			}
			step() // compile outside the timing
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				step()
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/step")
		})
	}
}
