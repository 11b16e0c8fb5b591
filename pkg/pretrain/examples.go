// Package pretrain fits the base policy by supervised learning, and makes the scene world's
// teacher-forced examples it learns from: for a training prompt, a scene drawn for it
// (promptgen.TrainingScene, so no held-out combination is ever asked for), its plan and its
// rendered image's codes, mixed with plan-less and unconditional rows. The learner's supervised
// anchor (grpo.sft_coef) adds the loss of the same examples to each BiCoT-GRPO update, so both
// draw the same distribution.
//
// Run is `learner pretrain`: Config (configs/pretrain.yaml) sizes the policy, whose vocabularies
// and learning aids (tied cells, phrase bags, code words) come from the tokenizer and the
// codebook, and trains it with warm-up and cosine decay (CosineLR), writing the checkpoint and its
// model config side by side.
//
// The supervised step itself, Trainer (Adam on model.SupervisedLossGraph, optionally over
// concurrent gradient shards), lives here and not in pkg/model: the rollout and reward workers
// link pkg/model to sample and score the policy, and must not carry its trainer.
package pretrain

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"

	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/promptgen"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
	"github.com/bicot-rl/bicot/pkg/wire"
)

// Mix says how a batch of examples is made.
type Mix struct {
	// Batch is the number of examples per batch.
	Batch int
	// NoPlanFrac of the examples drop the plan (so plan-less sampling is in distribution);
	// UncondFrac replace prompt and plan by the unconditional context (CFG's other branch).
	NoPlanFrac, UncondFrac float64
	// PlanOrder is the object order of the plans: "prompt" (as the prompt names them,
	// plan.Ordered) or "raster" (by cell, plan.Canonical).
	PlanOrder string
	// Seed drives every draw: example i of step s depends only on (Seed, s, i).
	Seed uint64
	// TypeRepeats puts every prompt of a task type this many times into the pool examples are
	// drawn from (1 for a type it does not name), so a type can be learnt from more examples
	// without a file of its own. The copies follow the prompts in rounds, as if the file went on
	// with its prompts of those types again (round r holds the types repeated more than r times).
	TypeRepeats map[string]int
}

// DefaultMix is the mix the shipped base policy was pretrained with.
func DefaultMix() Mix {
	return Mix{Batch: 32, NoPlanFrac: 0.15, UncondFrac: 0.1, PlanOrder: "prompt", Seed: 1}
}

// Validate names the first bad field.
func (m Mix) Validate() error {
	switch {
	case m.Batch < 1:
		return fmt.Errorf("batch %d < 1", m.Batch)
	case !(m.NoPlanFrac >= 0 && m.UncondFrac >= 0 && m.NoPlanFrac+m.UncondFrac <= 1):
		return fmt.Errorf("no_plan_frac %v and uncond_frac %v must be >= 0 with sum <= 1", m.NoPlanFrac, m.UncondFrac)
	case m.PlanOrder != "prompt" && m.PlanOrder != "raster":
		return fmt.Errorf("plan_order %q must be prompt or raster", m.PlanOrder)
	}
	if err := prompts.CheckTaskTypes(m.TypeRepeats); err != nil {
		return fmt.Errorf("type_repeats: %w", err)
	}
	for _, t := range slices.Sorted(maps.Keys(m.TypeRepeats)) {
		if n := m.TypeRepeats[t]; n < 1 || n > maxTypeRepeats {
			return fmt.Errorf("type_repeats: %s %d, want 1 to %d", t, n, maxTypeRepeats)
		}
	}
	return nil
}

// maxTypeRepeats bounds Mix.TypeRepeats: past it one type is the whole pool.
const maxTypeRepeats = 100

// Examples turns training prompts into teacher-forced batches. It implements
// trainer.SupervisedSource. It is safe for one caller at a time.
type Examples struct {
	mix     Mix
	mcfg    model.Config
	vocab   *tokenizer.Vocab
	cb      *vq.Codebook
	prompts []prompts.Prompt
	encoded [][]int32
}

// NewExamples makes examples from the prompts that carry a spec.
func NewExamples(mix Mix, mcfg model.Config, vocab *tokenizer.Vocab, cb *vq.Codebook, ps []prompts.Prompt) (*Examples, error) {
	if err := mix.Validate(); err != nil {
		return nil, fmt.Errorf("pretraining examples: %w", err)
	}
	if vocab == nil || cb == nil {
		return nil, errors.New("pretraining examples: vocabulary and codebook are required")
	}
	e := &Examples{mix: mix, mcfg: mcfg, vocab: vocab, cb: cb}
	for _, p := range prompts.Repeat(ps, mix.TypeRepeats) {
		if p.Spec == nil {
			continue
		}
		ids, err := wire.EncodePrompt(vocab, p.Prompt)
		if err != nil {
			return nil, fmt.Errorf("pretraining examples: %w", err)
		}
		e.prompts, e.encoded = append(e.prompts, p), append(e.encoded, ids)
	}
	if len(e.prompts) == 0 {
		return nil, errors.New("pretraining examples: no prompt with a spec")
	}
	return e, nil
}

// Prompts is the number of prompts examples are drawn for.
func (e *Examples) Prompts() int { return len(e.prompts) }

// Batch returns the batch of step s: Mix.Batch examples, each depending only on (seed, s, i).
func (e *Examples) Batch(step int) (model.Batch, error) {
	var b model.Batch
	for i := 0; i < e.mix.Batch; i++ {
		seq, tm, im, err := e.example(step, i)
		if err != nil {
			return b, err
		}
		b.Tokens, b.TextMask, b.ImageMask = append(b.Tokens, seq), append(b.TextMask, tm), append(b.ImageMask, im)
	}
	return b, nil
}

func (e *Examples) example(step, i int) (seq []int32, textMask, imageMask []float32, err error) {
	rng := rand.New(rand.NewPCG(e.mix.Seed, uint64(step)<<20|uint64(i)))
	for try := 0; try < 20; try++ {
		k := rng.IntN(len(e.prompts))
		p := e.prompts[k]
		sc, err := promptgen.TrainingScene(p, e.cb.Config(), rng)
		if err != nil {
			continue // a prompt that cannot be laid out on this canvas, or a held-out one: draw another
		}
		img, err := scene.Render(e.cb.Config(), sc)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("render scene for %q: %w", p.Prompt, err)
		}
		codes, err := e.cb.Encode(img)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("encode image for %q: %w", p.Prompt, err)
		}
		u := rng.Float64()
		switch {
		case u < e.mix.UncondFrac:
			seq = e.mcfg.UncondSequence(codes)
			textMask, imageMask = e.mcfg.Masks(seq, true)
		case u < e.mix.UncondFrac+e.mix.NoPlanFrac:
			seq, err = e.mcfg.Sequence(e.encoded[k], nil, codes)
			if err != nil {
				return nil, nil, nil, err
			}
			textMask, imageMask = e.mcfg.Masks(seq, true)
		default:
			text := plan.Ordered(sc)
			if e.mix.PlanOrder == "raster" {
				text = plan.Canonical(sc)
			}
			planIDs, err := wire.EncodePrompt(e.vocab, text) // plan text is encoded like prompt text
			if err != nil {
				return nil, nil, nil, fmt.Errorf("plan for %q: %w", p.Prompt, err)
			}
			seq, err = e.mcfg.Sequence(e.encoded[k], planIDs, codes)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("prompt %q: %w", p.Prompt, err)
			}
			textMask, imageMask = e.mcfg.Masks(seq, false)
		}
		return seq, textMask, imageMask, nil
	}
	return nil, nil, nil, fmt.Errorf("step %d example %d: no prompt gave a training scene in 20 draws (are these held-out prompts? the anchor needs the pretraining prompts)", step, i)
}
