package trainer

import (
	"errors"
	"fmt"
	"math"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/grpo"
)

// Options configure a Trainer: the run config's grpo section (config.GRPO, what a run may set)
// and what the trainer takes from the rest of the run (the rollouts' sampling settings, the
// staleness bound, the starting version). OptionsFor builds them from a run config; tests start
// from DefaultOptions.
type Options struct {
	config.GRPO `yaml:",inline"`
	// MaxStaleness k: a sample drawn with policy version v is accepted while
	// Version()-v <= k. 0 is strictly on-policy. k > 0 requires Loss.Clip.
	MaxStaleness int64 `yaml:"max_staleness" json:"max_staleness"`
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
	// ExclusiveCells scores plan words with the cells a plan already names masked out, as the
	// rollouts drew them (bus.SamplingParams.ExclusiveCells); it must match them.
	ExclusiveCells bool `yaml:"exclusive_cells" json:"exclusive_cells"`
	// InitialVersion is the policy version of the weights the trainer starts from (the version
	// rollouts of those weights carry). Each Step adds one.
	InitialVersion int64 `yaml:"initial_version" json:"initial_version"`
}

// DefaultOptions are config.DefaultGRPO, strictly on-policy, without guidance.
func DefaultOptions() Options { return Options{GRPO: config.DefaultGRPO()} }

// OptionsFor turns a run config into the trainer's options: its grpo section as the run uses it
// (config.Config.Effective: defaults, batch size at least P*G, clipping with staleness), with the
// run's sampling settings and staleness bound.
func OptionsFor(c config.Config) (Options, error) {
	o := Options{GRPO: c.Effective().GRPO, MaxStaleness: int64(c.Staleness),
		CFGWeight: c.Sampling.CFGWeight, Temperature: c.Sampling.Temperature, ImageLogp: c.Sampling.ImageLogp,
		ExclusiveCells: c.Sampling.ExclusiveCells}
	if err := o.Validate(); err != nil {
		return o, err
	}
	return o, nil
}

// WithDefaults returns the options with every zero value that has a default filled in: what a
// Trainer built from them uses.
func (o Options) WithDefaults() Options { return o.withDefaults() }

func (o Options) withDefaults() Options {
	o.GRPO = o.GRPO.WithDefaults()
	return o
}

// AdvantageOptions are the options Step computes advantages with (the learner recomputes a kept
// step's advantages with them for its samples index).
func (o Options) AdvantageOptions() grpo.AdvantageOptions {
	return grpo.AdvantageOptions{StdEps: o.StdEps, FilterZeroStd: o.FilterZeroStd, MinSpread: o.MinSpread, Scale: o.AdvScale}
}

// Validate reports every problem of the options.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	if err := o.GRPO.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.AdvantageOptions().Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.MaxStaleness < 0 {
		errs = append(errs, fmt.Errorf("max_staleness %d: want >= 0 (0 = strictly on-policy)", o.MaxStaleness))
	}
	if o.MaxStaleness > 0 && !o.Loss.Clip {
		errs = append(errs, fmt.Errorf("max_staleness %d > 0 needs loss.clip: stale samples have ratios away from 1 and an unclipped update can run away", o.MaxStaleness))
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
