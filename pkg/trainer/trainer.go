package trainer

import (
	"errors"
	"fmt"

	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/grpo"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
)

// Trainer owns the policy being trained (its weights and optimizer state), the frozen reference
// policy of the KL term, and the policy version. It is not safe for concurrent use; while it
// lives, nobody else may change the policy's weights (sampling with it between steps is fine).
type Trainer struct {
	opts    Options
	policy  *model.Model
	ref     *model.Model
	vocab   *tokenizer.Vocab
	opt     *grpo.Optimizer
	version int64
	steps   int64 // updates applied by this trainer (and the trainers it was restored from)

	train *context.Exec
	// sft is the train step with the supervised anchor's inputs (SFTCoef > 0), src its data.
	sft *context.Exec
	src SupervisedSource
}

// SupervisedSource hands out teacher-forced batches (prompt, plan, image sequences with their
// loss masks, model.Batch) for the supervised anchor; batch s is the one for the trainer's
// update s, so a resumed run sees the same data.
type SupervisedSource interface {
	Batch(step int) (model.Batch, error)
}

// SetSupervised gives the trainer the data of the supervised anchor (Options.SFTCoef > 0). Every
// batch must have the same number of rows (the train graph has fixed shapes).
func (t *Trainer) SetSupervised(src SupervisedSource) error {
	if t.opts.SFTCoef <= 0 {
		return errors.New("set supervised: sft_coef is 0")
	}
	if src == nil {
		return errors.New("set supervised: nil source")
	}
	var err error
	t.sft, err = t.newTrainExec(true)
	if err != nil {
		return fmt.Errorf("set supervised: build train step: %w", err)
	}
	t.src = src
	return nil
}

// NewTrainer prepares BiCoT-GRPO training of policy. The reference policy is a clone of policy
// as it is now. The policy's text vocabulary must be the tokenizer's.
func NewTrainer(policy *model.Model, opts Options) (*Trainer, error) {
	if policy == nil {
		return nil, errors.New("new trainer: nil policy")
	}
	ref, err := policy.Clone()
	if err != nil {
		return nil, fmt.Errorf("new trainer: %w", err)
	}
	return NewTrainerWithReference(policy, ref, opts)
}

// NewTrainerWithReference is NewTrainer with an explicit frozen reference (e.g. the base policy
// when training resumes from later weights). The trainer never updates it.
func NewTrainerWithReference(policy, reference *model.Model, opts Options) (*Trainer, error) {
	if policy == nil || reference == nil {
		return nil, errors.New("new trainer: nil policy or reference")
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("new trainer: %w", err)
	}
	opts = opts.withDefaults()
	if !reference.Config.Equal(policy.Config) {
		return nil, fmt.Errorf("new trainer: reference config %+v differs from the policy's %+v", reference.Config, policy.Config)
	}
	if reference.Ctx == policy.Ctx {
		return nil, errors.New("new trainer: reference shares the policy's context; pass a Clone")
	}
	if opts.ExclusiveCells && len(policy.Config.CellTokens) == 0 {
		return nil, errors.New("new trainer: exclusive_cells needs a policy with cell_tokens (its plans' cell words)")
	}
	vocab := tokenizer.New()
	if vocab.Size() != policy.Config.TextVocab {
		return nil, fmt.Errorf("new trainer: tokenizer has %d ids, the policy's text vocabulary %d", vocab.Size(), policy.Config.TextVocab)
	}
	opt, err := grpo.NewOptimizer(opts.Optimizer)
	if err != nil {
		return nil, fmt.Errorf("new trainer: %w", err)
	}
	t := &Trainer{opts: opts, policy: policy, ref: reference, vocab: vocab, opt: opt, version: opts.InitialVersion}
	t.train, err = t.newTrainExec(false)
	if err != nil {
		return nil, fmt.Errorf("new trainer: build train step: %w", err)
	}
	return t, nil
}

// Options returns the trainer's options (defaults filled in).
func (t *Trainer) Options() Options { return t.opts }

// Version is the policy version of the current weights: Options.InitialVersion plus the number
// of updates applied.
func (t *Trainer) Version() int64 { return t.version }

// Policy is the policy being trained (for sampling and evaluation between steps).
func (t *Trainer) Policy() *model.Model { return t.policy }

// Reference is the frozen reference policy.
func (t *Trainer) Reference() *model.Model { return t.ref }

// scoreOptions is the distribution the rollouts recorded logp_old under: the guided one they
// sampled from, or the conditional logits alone (ImageLogp conditional). Guidance weight 1 is no
// guidance (u + 1*(c-u) = c; the wire format's convention), scored without the unconditional
// branch.
func (t *Trainer) scoreOptions() model.ScoreOptions {
	w := t.opts.CFGWeight
	if w == 1 || t.opts.ImageLogp == config.ImageLogpConditional {
		w = 0
	}
	return model.ScoreOptions{CFGWeight: w, Temperature: t.opts.Temperature, ExclusiveCells: t.opts.ExclusiveCells}
}
