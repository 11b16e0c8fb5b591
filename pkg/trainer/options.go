package trainer

import (
	"errors"
	"fmt"
	"math"

	"github.com/bicot-rl/bicot/pkg/reward"

	"github.com/bicot-rl/bicot/pkg/config"

	"github.com/bicot-rl/bicot/pkg/grpo"
)

// DefaultLR is the learning rate of DefaultOptions. The reference's 1e-6 is tuned for a
// 7B-parameter model; our policy has ~10^5 weights and at 1e-6 moves too little to measure in a
// few dozen steps. At 1e-4 the default-sized policy (d64, 3 layers) rewarded for one image code
// goes from 0.20 to 0.50 in 30 steps of 2 prompts x 8 with KL 0.17 to the reference (the
// package's learning test); 3e-4 reached 0.66 with twice the KL. The lower rate is the default
// because our experts can be gamed and the base policy's imperfections are what RL should fix,
// not drift away from (docs/learner.md).
const DefaultLR = 1e-4

// DefaultMinSpread is Options.MinSpread's default, reward.TieSpread.
const DefaultMinSpread = reward.TieSpread

// DefaultBatchSize is the padded number of sequences per step: 4 prompts x G = 8, the rollout
// shape of design section 6b.
const DefaultBatchSize = 32

// Options configure a Trainer. Zero values of Loss.Norm, Loss.Level and Optimizer.Schedule mean
// the defaults; use DefaultOptions as the starting point.
type Options struct {
	// Loss: beta (KL weight, reference 0.01), clipping and its epsilons, normalisation
	// (token|sequence|level), level switch (both|plan|image).
	Loss grpo.LossOptions `yaml:"loss" json:"loss"`
	// Optimizer: AdamW, global-norm gradient clipping, learning-rate schedule.
	Optimizer grpo.OptimizerOptions `yaml:"optimizer" json:"optimizer"`
	// FilterZeroStd drops groups whose rewards all tie (DAPO's dynamic-sampling filter).
	FilterZeroStd bool `yaml:"filter_zero_std" json:"filter_zero_std"`
	// StdEps is added to the group's reward std (0 means grpo.DefaultStdEps, the reference 1e-4).
	StdEps float64 `yaml:"std_eps" json:"std_eps"`
	// MinSpread: groups whose rewards span less than this count as tied (zero advantage,
	// filtered with FilterZeroStd); 0 = exact ties only. See grpo.AdvantageOptions.
	MinSpread float64 `yaml:"min_spread" json:"min_spread"`
	// UpdateEpochs is the number of optimiser updates each batch gets (PPO's epochs; the
	// reference does 1). Sampling dominates a step, so more updates per batch learn more per
	// sample; after the first the ratio leaves 1, so values > 1 need Loss.Clip.
	UpdateEpochs int `yaml:"update_epochs" json:"update_epochs"`
	// SFTCoef > 0 adds SFTCoef x the supervised (teacher-forced) loss of a batch from the
	// trainer's SupervisedSource to every update (PPO-ptx style): it anchors the policy to the
	// data it was pretrained on while RL moves it. 0 (default, the reference) is pure GRPO.
	SFTCoef float64 `yaml:"sft_coef" json:"sft_coef"`
	// AdvScale is "std" (reference; divide by std + StdEps) or "none" (Dr. GRPO).
	AdvScale string `yaml:"adv_scale" json:"adv_scale"`
	// MaxStaleness k: a sample drawn with policy version v is accepted while
	// Version()-v <= k. 0 is strictly on-policy. k > 0 requires Loss.Clip.
	MaxStaleness int64 `yaml:"max_staleness" json:"max_staleness"`
	// BatchSize is the fixed number of sequences of the train graph; a step with more samples is
	// refused, one with fewer is padded with zero-mask rows.
	BatchSize int `yaml:"batch_size" json:"batch_size"`
	// CFGWeight and Temperature are the sampling settings of the rollouts (bus.SamplingParams):
	// the current and reference log-probs are taken under the same distribution the recorded
	// logp_old came from. CFGWeight 0 or 1 means no guidance; Temperature 0 means 1.
	CFGWeight   float64 `yaml:"cfg_weight" json:"cfg_weight"`
	Temperature float64 `yaml:"temperature" json:"temperature"`
	// ImageLogp is the distribution image tokens are trained under: "guided" (u + w(c-u), what
	// they were drawn from; "" too) or "conditional" (the prompt-conditioned logits alone, as
	// T2I-R1's code trains). It must match the rollouts' bus.SamplingParams.ImageLogp, which
	// decides what logp_old holds. With guidance off both are the same distribution.
	ImageLogp string `yaml:"image_logp" json:"image_logp"`
	// InitialVersion is the policy version of the weights the trainer starts from (the version
	// rollouts of those weights carry). Each Step adds one.
	InitialVersion int64 `yaml:"initial_version" json:"initial_version"`
}

// DefaultOptions are the reference's loss settings (beta 0.01, token mean, both levels, no
// clipping, strictly on-policy) with this package's learning rate and batch size.
func DefaultOptions() Options {
	opt := grpo.DefaultOptimizerOptions()
	opt.LR = DefaultLR
	return Options{
		Loss:      grpo.DefaultLossOptions(),
		Optimizer: opt,
		BatchSize: DefaultBatchSize,
		MinSpread: DefaultMinSpread,
	}
}

// WithDefaults returns the options with every zero value that has a default filled in: what a
// Trainer built from them uses.
func (o Options) WithDefaults() Options { return o.withDefaults() }

// withDefaults fills the zero values that have a default.
func (o Options) withDefaults() Options {
	if o.Loss.Norm == "" {
		o.Loss.Norm = grpo.NormTokenMean
	}
	if o.Loss.Level == "" {
		o.Loss.Level = grpo.LevelBoth
	}
	if o.Optimizer.Schedule == "" {
		o.Optimizer.Schedule = grpo.ScheduleConstant
	}
	if o.StdEps == 0 {
		o.StdEps = grpo.DefaultStdEps
	}
	if o.UpdateEpochs == 0 {
		o.UpdateEpochs = 1
	}
	if o.AdvScale == "" {
		o.AdvScale = grpo.ScaleStd
	}
	return o
}

func (o Options) advantageOptions() grpo.AdvantageOptions {
	return grpo.AdvantageOptions{StdEps: o.StdEps, FilterZeroStd: o.FilterZeroStd, MinSpread: o.MinSpread, Scale: o.AdvScale}
}

// Validate reports every problem of the options.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	if err := o.Loss.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.Optimizer.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.advantageOptions().Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.MaxStaleness < 0 {
		errs = append(errs, fmt.Errorf("max_staleness %d: want >= 0 (0 = strictly on-policy)", o.MaxStaleness))
	}
	if o.MaxStaleness > 0 && !o.Loss.Clip {
		errs = append(errs, fmt.Errorf("max_staleness %d > 0 needs loss.clip: stale samples have ratios away from 1 and an unclipped update can run away", o.MaxStaleness))
	}
	if math.IsNaN(o.SFTCoef) || math.IsInf(o.SFTCoef, 0) || o.SFTCoef < 0 {
		errs = append(errs, fmt.Errorf("sft_coef %v: want a finite value >= 0", o.SFTCoef))
	}
	if o.UpdateEpochs < 0 {
		errs = append(errs, fmt.Errorf("update_epochs %d: want >= 1 (0 = 1)", o.UpdateEpochs))
	}
	if o.UpdateEpochs > 1 && !o.Loss.Clip {
		errs = append(errs, fmt.Errorf("update_epochs %d > 1 needs loss.clip: later updates of a batch are off-policy", o.UpdateEpochs))
	}
	if o.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("batch_size %d: want >= 1", o.BatchSize))
	}
	if math.IsNaN(o.CFGWeight) || math.IsInf(o.CFGWeight, 0) || o.CFGWeight < 0 {
		errs = append(errs, fmt.Errorf("cfg_weight %v: want a finite value >= 0", o.CFGWeight))
	}
	if math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0) || o.Temperature < 0 {
		errs = append(errs, fmt.Errorf("temperature %v: want a finite value >= 0 (0 = 1)", o.Temperature))
	}
	if !config.ValidImageLogp(o.ImageLogp) {
		errs = append(errs, fmt.Errorf("image_logp %q: want %q or %q", o.ImageLogp, config.ImageLogpGuided, config.ImageLogpConditional))
	}
	if o.InitialVersion < 0 {
		errs = append(errs, fmt.Errorf("initial_version %d: want >= 0", o.InitialVersion))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("learner options: %w", err)
	}
	return nil
}
