package pretrain

import (
	"errors"
	"fmt"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Anchor builds the supervised anchor's data (grpo.sft_coef > 0): pretraining examples of the
// run's pretrain_prompts in the pretraining mix (with the run's anchor_type_repeats), seeded by
// the run (seed + 1000, apart from the samples' streams). Batch s depends only on (seed, s), and
// the trainer asks for the batch of its own update count, so a resumed run draws the same
// batches. cb may be nil: the run's codebook is loaded.
func Anchor(c config.Config, mcfg model.Config, cb *vq.Codebook) (*Examples, error) {
	if c.PretrainPrompts == "" {
		return nil, errors.New("supervised anchor: pretrain_prompts is empty")
	}
	ps, err := prompts.ReadFile(c.PretrainPrompts)
	if err != nil {
		return nil, fmt.Errorf("supervised anchor: %w", err)
	}
	if cb == nil {
		if cb, err = vq.Load(c.Codebook); err != nil {
			return nil, fmt.Errorf("supervised anchor: %w", err)
		}
	}
	mix := DefaultMix()
	mix.Seed = c.Seed + 1000
	if err := prompts.CheckTaskTypes(c.AnchorTypeRepeats); err != nil {
		return nil, fmt.Errorf("supervised anchor: anchor_type_repeats: %w", err)
	}
	mix.TypeRepeats = c.AnchorTypeRepeats
	src, err := NewExamples(mix, mcfg, tokenizer.New(), cb, ps)
	if err != nil {
		return nil, fmt.Errorf("supervised anchor: %s: %w", c.PretrainPrompts, err)
	}
	// A file the examples cannot be drawn from (held-out prompts) fails here, not at the first step.
	if _, err := src.Batch(0); err != nil {
		return nil, fmt.Errorf("supervised anchor: %s: %w", c.PretrainPrompts, err)
	}
	return src, nil
}
