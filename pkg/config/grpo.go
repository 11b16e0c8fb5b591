package config

import (
	"errors"
	"fmt"
	"math"
)

// This file is the run config's grpo section: the learner's BiCoT-GRPO hyper-parameters (loss,
// optimiser, advantages, supervised anchor), typed, with their defaults and validation, so a typo
// or a bad value is found when the config is loaded, not when the learner starts. pkg/grpo and
// pkg/trainer take these types.

// DefaultLR is the learning rate of DefaultGRPO. The reference's 1e-6 is tuned for a
// 7B-parameter model; our policy has ~10^5 weights and at 1e-6 moves too little to measure in a
// few dozen steps. At 1e-4 the default-sized policy (d64, 3 layers) rewarded for one image code
// goes from 0.20 to 0.50 in 30 steps of 2 prompts x 8 with KL 0.17 to the reference (the
// package's learning test); 3e-4 reached 0.66 with twice the KL. The lower rate is the default
// because our experts can be gamed and the base policy's imperfections are what RL should fix,
// not drift away from (docs/learner.md).
const DefaultLR = 1e-4

// DefaultMinSpread is GRPO.MinSpread's default: rewards of a group that span less than this count
// as tied (zero advantage; `reward-worker alignment` counts them as the reward's ties too).
// docs/learner.md has the measurement behind it.
const DefaultMinSpread = 0.05

// DefaultBatchSize is the padded number of sequences per step: 4 prompts x G = 8,.
const DefaultBatchSize = 32

// DefaultStdEps is added to a group's reward standard deviation, as in the reference.
const DefaultStdEps = 1e-4

// Advantage scales (GRPO.AdvScale).
const (
	AdvScaleStd  = "std"  // divide the centred rewards by std + StdEps (the reference)
	AdvScaleNone = "none" // Dr. GRPO: no division
)

// Normalization chooses how per-token losses become one scalar.
type Normalization string

const (
	// NormTokenMean averages over every unmasked token of the batch, plan and image together
	// (the reference). Image tokens outnumber plan tokens, so they dominate.
	NormTokenMean Normalization = "token"
	// NormSequenceMean averages each sample's tokens, then the samples.
	NormSequenceMean Normalization = "sequence"
	// NormLevelMean averages the plan tokens and the image tokens separately (over the batch)
	// and then the two means, so each level weighs the same whatever its length.
	NormLevelMean Normalization = "level"
)

// Level selects which CoT levels the loss trains (the paper's ablation).
type Level string

const (
	LevelBoth  Level = "both"  // semantic-level (plan) and token-level (image)
	LevelPlan  Level = "plan"  // semantic-level only
	LevelImage Level = "image" // token-level only
)

// LossOptions configure the BiCoT-GRPO loss (grpo.Loss): the grpo.loss section.
type LossOptions struct {
	// Beta weighs the k3 KL penalty against the reference policy (reference: 0.01).
	Beta float64 `yaml:"beta" json:"beta"`
	// Clip turns on PPO clipping of the ratio to [1-EpsLow, 1+EpsHigh] (needed once samples are
	// older than the policy being trained: staleness > 0 or several updates per batch).
	Clip    bool    `yaml:"clip" json:"clip"`
	EpsLow  float64 `yaml:"eps_low" json:"eps_low"`
	EpsHigh float64 `yaml:"eps_high" json:"eps_high"`
	// Norm: token (default), sequence or level.
	Norm Normalization `yaml:"norm" json:"norm"`
	// Level: both (default), plan or image.
	Level Level `yaml:"level" json:"level"`
}

// DefaultLossOptions are the reference's settings (beta 0.01, no clipping, token mean, both
// levels) with the usual PPO epsilons ready for when clipping is turned on.
func DefaultLossOptions() LossOptions {
	return LossOptions{Beta: 0.01, EpsLow: 0.2, EpsHigh: 0.2, Norm: NormTokenMean, Level: LevelBoth}
}

// Validate checks the options; empty Norm and Level mean the defaults.
func (o LossOptions) Validate() error {
	fin := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	if !fin(o.Beta) || o.Beta < 0 {
		return fmt.Errorf("grpo.loss: beta %v: want a finite value >= 0", o.Beta)
	}
	if o.Clip {
		if !fin(o.EpsLow) || o.EpsLow <= 0 || o.EpsLow >= 1 {
			return fmt.Errorf("grpo.loss: eps_low %v: want 0 < eps_low < 1", o.EpsLow)
		}
		if !fin(o.EpsHigh) || o.EpsHigh <= 0 {
			return fmt.Errorf("grpo.loss: eps_high %v: want a finite value > 0", o.EpsHigh)
		}
	}
	switch o.Norm {
	case "", NormTokenMean, NormSequenceMean, NormLevelMean:
	default:
		return fmt.Errorf("grpo.loss: norm %q: want token, sequence or level", o.Norm)
	}
	switch o.Level {
	case "", LevelBoth, LevelPlan, LevelImage:
	default:
		return fmt.Errorf("grpo.loss: level %q: want both, plan or image", o.Level)
	}
	return nil
}

// Schedule kinds for the learning rate.
const (
	ScheduleConstant = "constant" // optional linear warm-up, then constant
	ScheduleCosine   = "cosine"   // optional linear warm-up, then cosine decay to MinLR
)

// OptimizerOptions configure the update: global-norm gradient clipping, then AdamW.
//
// AdamW is gomlx v0.26's optimizers.Adam().WeightDecay(wd): decoupled decay lr*wd*w added to the
// step, applied to every trainable variable. gomlx has no global-norm clipping (only per-value
// step clipping) and its cosine schedule restarts each period and warms up from MinLR, so this
// package computes gradients itself, clips them, sets the learning-rate variable from its own
// schedule, and hands the result to Adam's UpdateGraphWithGradients.
type OptimizerOptions struct {
	LR          float64 `yaml:"lr" json:"lr"`
	Beta1       float64 `yaml:"beta1"`
	Beta2       float64 `yaml:"beta2"`
	Epsilon     float64 `yaml:"epsilon" json:"epsilon"`
	WeightDecay float64 `yaml:"weight_decay" json:"weight_decay"`
	// ClipNorm is the maximum global L2 norm of the gradients; 0 disables clipping.
	ClipNorm float64 `yaml:"clip_norm" json:"clip_norm"`
	// Schedule: constant (default) or cosine.
	Schedule    string  `yaml:"schedule" json:"schedule"`
	WarmupSteps int     `yaml:"warmup_steps" json:"warmup_steps"`
	TotalSteps  int     `yaml:"total_steps" json:"total_steps"` // cosine: steps until MinLR (warm-up included)
	MinLR       float64 `yaml:"min_lr" json:"min_lr"`
}

// DefaultOptimizerOptions follow the reference (lr 1e-6, AdamW betas 0.9/0.999, eps 1e-8, weight
// decay 0, grad-norm clip 1.0, constant schedule).
func DefaultOptimizerOptions() OptimizerOptions {
	return OptimizerOptions{LR: 1e-6, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-8, ClipNorm: 1, Schedule: ScheduleConstant}
}

// Validate checks the options.
func (o OptimizerOptions) Validate() error {
	fin := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	switch {
	case !fin(o.LR) || o.LR <= 0:
		return fmt.Errorf("grpo.optimizer: lr %v: want a finite value > 0", o.LR)
	case !fin(o.Beta1) || o.Beta1 < 0 || o.Beta1 >= 1:
		return fmt.Errorf("grpo.optimizer: beta1 %v: want 0 <= beta1 < 1", o.Beta1)
	case !fin(o.Beta2) || o.Beta2 < 0 || o.Beta2 >= 1:
		return fmt.Errorf("grpo.optimizer: beta2 %v: want 0 <= beta2 < 1", o.Beta2)
	case !fin(o.Epsilon) || o.Epsilon <= 0:
		return fmt.Errorf("grpo.optimizer: epsilon %v: want a finite value > 0", o.Epsilon)
	case !fin(o.WeightDecay) || o.WeightDecay < 0:
		return fmt.Errorf("grpo.optimizer: weight_decay %v: want a finite value >= 0", o.WeightDecay)
	case !fin(o.ClipNorm) || o.ClipNorm < 0:
		return fmt.Errorf("grpo.optimizer: clip_norm %v: want a finite value >= 0 (0 = off)", o.ClipNorm)
	case o.WarmupSteps < 0:
		return fmt.Errorf("grpo.optimizer: warmup_steps %d: want >= 0", o.WarmupSteps)
	case !fin(o.MinLR) || o.MinLR < 0 || o.MinLR > o.LR:
		return fmt.Errorf("grpo.optimizer: min_lr %v: want 0 <= min_lr <= lr (%v)", o.MinLR, o.LR)
	}
	switch o.Schedule {
	case "", ScheduleConstant:
	case ScheduleCosine:
		if o.TotalSteps <= o.WarmupSteps {
			return fmt.Errorf("grpo.optimizer: cosine schedule needs total_steps (%d) > warmup_steps (%d)", o.TotalSteps, o.WarmupSteps)
		}
	default:
		return fmt.Errorf("grpo.optimizer: schedule %q: want constant or cosine", o.Schedule)
	}
	return nil
}

// LearningRate is the schedule on the host: the rate used by update number step (0-based).
// Warm-up rises linearly lr*(step+1)/warmup, so the first update is not wasted at zero.
func (o OptimizerOptions) LearningRate(step int64) float64 {
	if step < int64(o.WarmupSteps) {
		return o.LR * float64(step+1) / float64(o.WarmupSteps)
	}
	if o.Schedule != ScheduleCosine {
		return o.LR
	}
	p := float64(step-int64(o.WarmupSteps)) / float64(o.TotalSteps-o.WarmupSteps)
	p = min(p, 1)
	return o.MinLR + (o.LR-o.MinLR)*0.5*(1+math.Cos(math.Pi*p))
}

// GRPO is the grpo section: what a run may set of the trainer's options. The trainer adds the
// sampling settings and staleness bound of the run (trainer.OptionsFor).
type GRPO struct {
	// Loss: beta (KL weight, reference 0.01), clipping and its epsilons, normalisation
	// (token|sequence|level), level switch (both|plan|image).
	Loss LossOptions `yaml:"loss" json:"loss"`
	// Optimizer: AdamW, global-norm gradient clipping, learning-rate schedule.
	Optimizer OptimizerOptions `yaml:"optimizer" json:"optimizer"`
	// FilterZeroStd drops groups whose rewards all tie (DAPO's dynamic-sampling filter).
	FilterZeroStd bool `yaml:"filter_zero_std" json:"filter_zero_std"`
	// StdEps is added to the group's reward std (0 means DefaultStdEps, the reference 1e-4).
	StdEps float64 `yaml:"std_eps" json:"std_eps"`
	// MinSpread: groups whose rewards span less than this count as tied (zero advantage,
	// filtered with FilterZeroStd); 0 = exact ties only.
	MinSpread float64 `yaml:"min_spread" json:"min_spread"`
	// UpdateEpochs is the number of optimiser updates each batch gets (PPO's epochs; the
	// reference does 1). Sampling dominates a step, so more updates per batch learn more per
	// sample; after the first the ratio leaves 1, so values > 1 need Loss.Clip.
	UpdateEpochs int `yaml:"update_epochs" json:"update_epochs"`
	// SFTCoef > 0 adds SFTCoef x the supervised (teacher-forced) loss of a batch of pretraining
	// examples to every update (PPO-ptx style): it anchors the policy to the data it was
	// pretrained on while RL moves it. 0 (the reference) is pure GRPO.
	SFTCoef float64 `yaml:"sft_coef" json:"sft_coef"`
	// AdvScale is "std" (reference; divide by std + StdEps) or "none" (Dr. GRPO).
	AdvScale string `yaml:"adv_scale" json:"adv_scale"`
	// BatchSize is the fixed number of sequences of the train graph, at least P x G (raised to
	// it); a step with more samples is refused, one with fewer is padded with zero-mask rows.
	BatchSize int `yaml:"batch_size" json:"batch_size"`
}

// DefaultGRPO are the reference's loss settings (beta 0.01, token mean, both levels, no
// clipping) with this package's learning rate, batch size and tie spread.
func DefaultGRPO() GRPO {
	opt := DefaultOptimizerOptions()
	opt.LR = DefaultLR
	return GRPO{Loss: DefaultLossOptions(), Optimizer: opt, BatchSize: DefaultBatchSize, MinSpread: DefaultMinSpread}
}

// WithDefaults returns g with every zero value that has a default filled in: what a trainer
// built from it uses.
func (g GRPO) WithDefaults() GRPO {
	if g.Loss.Norm == "" {
		g.Loss.Norm = NormTokenMean
	}
	if g.Loss.Level == "" {
		g.Loss.Level = LevelBoth
	}
	if g.Optimizer.Schedule == "" {
		g.Optimizer.Schedule = ScheduleConstant
	}
	if g.StdEps == 0 {
		g.StdEps = DefaultStdEps
	}
	if g.UpdateEpochs == 0 {
		g.UpdateEpochs = 1
	}
	if g.AdvScale == "" {
		g.AdvScale = AdvScaleStd
	}
	return g
}

// Validate reports every problem of the section, each naming its field.
func (g GRPO) Validate() error {
	g = g.WithDefaults()
	fin := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	var errs []error
	if err := g.Loss.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := g.Optimizer.Validate(); err != nil {
		errs = append(errs, err)
	}
	if !fin(g.StdEps) || g.StdEps < 0 {
		errs = append(errs, fmt.Errorf("grpo.std_eps %v: want a finite value >= 0", g.StdEps))
	}
	if !fin(g.MinSpread) || g.MinSpread < 0 {
		errs = append(errs, fmt.Errorf("grpo.min_spread %v: want a finite value >= 0", g.MinSpread))
	}
	if g.AdvScale != AdvScaleStd && g.AdvScale != AdvScaleNone {
		errs = append(errs, fmt.Errorf("grpo.adv_scale %q: want %q or %q", g.AdvScale, AdvScaleStd, AdvScaleNone))
	}
	if !fin(g.SFTCoef) || g.SFTCoef < 0 {
		errs = append(errs, fmt.Errorf("grpo.sft_coef %v: want a finite value >= 0", g.SFTCoef))
	}
	if g.UpdateEpochs < 0 {
		errs = append(errs, fmt.Errorf("grpo.update_epochs %d: want >= 1 (0 = 1)", g.UpdateEpochs))
	}
	if g.UpdateEpochs > 1 && !g.Loss.Clip {
		errs = append(errs, fmt.Errorf("grpo.update_epochs %d > 1 needs grpo.loss.clip: later updates of a batch are off-policy", g.UpdateEpochs))
	}
	if g.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("grpo.batch_size %d: want >= 1", g.BatchSize))
	}
	return errors.Join(errs...)
}

// Effective is c with its grpo section as the trainer runs it: defaults filled in, the batch size
// raised to P x G, clipping on when samples may be stale. A run records it as its config.yaml,
// so its learning rate, KL weight and advantage settings are readable without the code's
// defaults.
func (c Config) Effective() Config {
	c.GRPO = c.GRPO.WithDefaults()
	c.GRPO.BatchSize = max(c.GRPO.BatchSize, c.PromptsPerStep*c.GroupSize)
	if c.Staleness > 0 {
		c.GRPO.Loss.Clip = true
	}
	return c
}
