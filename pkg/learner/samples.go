package learner

import (
	"context"
	"fmt"
	"time"

	"github.com/bicot-rl/bicot/pkg/grpo"
	"github.com/bicot-rl/bicot/pkg/runfiles"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// keepSamples reports whether step's samples are kept: every samples_every steps from step 0
// (the initial policy's samples, what the report compares the last ones with) and the last step.
func keepSamples(step int64, final bool, every int) bool {
	return final || (every > 0 && step%int64(every) == 0)
}

// writeSamples keeps the samples of a trained step under <run>/samples/step-<N>/: each image as
// a PNG at the codebook's resolution (32x32 here; viewers scale it up without smoothing) and an
// index with every group's prompt and every sample's plan, rewards and advantage. At most P
// groups of G samples are written, whatever the step held, so a kept step costs at most P*G
// images. from is the policy version the update started from.
func (l *Learner) writeSamples(ctx context.Context, step, from int64, groups []trainer.Group) error {
	if len(groups) > l.cfg.PromptsPerStep {
		groups = groups[:l.cfg.PromptsPerStep]
	}
	rewards := make([][]float64, len(groups))
	for i, g := range groups {
		rewards[i] = g.Rewards()
	}
	// The trainer's own advantages, recomputed from the same rewards with the same options: the
	// trainer does not hand them out, and they are cheap.
	adv, err := grpo.ComputeAdvantages(rewards, l.trainer.Options().AdvantageOptions())
	if err != nil {
		return fmt.Errorf("samples of step %d: %w", step, err)
	}
	perGroup := make([][]float64, len(groups))
	for k, gi := range adv.Kept {
		perGroup[gi] = adv.PerGroup[k]
	}
	vocab := tokenizer.New()
	idx := runfiles.StepSamples{Run: l.cfg.RunID, Step: step, PolicyVersion: from, Time: time.Now().UTC()}
	images := map[string][]byte{}
	for gi, g := range groups {
		sg := runfiles.SampleGroup{PromptIndex: g.Key.PromptIndex, Filtered: perGroup[gi] == nil}
		samples := g.Samples
		if len(samples) > l.cfg.GroupSize {
			samples = samples[:l.cfg.GroupSize]
		}
		for si, s := range samples {
			if si == 0 {
				sg.Prompt, sg.TaskType = s.Prompt.Prompt, s.Prompt.TaskType
			}
			name := runfiles.ImageName(s.PromptIndex, s.SampleIndex)
			img, err := s.Image(l.o.Codebook)
			if err != nil {
				return fmt.Errorf("samples of step %d: %w", step, err)
			}
			b, err := scene.PNG(img)
			if err != nil {
				return fmt.Errorf("samples of step %d: %s: %w", step, name, err)
			}
			images[name] = b
			rec := runfiles.SampleRecord{SampleIndex: s.SampleIndex, Plan: vocab.Decode(planIDs(s.PlanTokens[:s.PlanLen])),
				PlanTruncated: s.PlanTruncated, Reward: s.Reward, PerExpert: s.PerExpert, PolicyVersion: s.PolicyVersion, Image: name}
			if a := perGroup[gi]; si < len(a) {
				rec.Advantage = a[si]
			}
			sg.Samples = append(sg.Samples, rec)
		}
		idx.Groups = append(idx.Groups, sg)
	}
	return runfiles.PutSamples(ctx, l.o.Store, idx, images)
}

func planIDs(tokens []int32) []int {
	out := make([]int, len(tokens))
	for i, t := range tokens {
		out[i] = int(t)
	}
	return out
}
