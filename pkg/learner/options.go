package learner

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/trainer"
)

// TrainerOptions turns the run config into the trainer's options: the config's grpo section
// decoded over trainer.DefaultOptions (unknown keys are errors), with the batch size at least P*G
// and the sampling settings and staleness bound of the run.
func TrainerOptions(c config.Config) (trainer.Options, error) {
	o := trainer.DefaultOptions()
	if len(c.GRPO) > 0 {
		b, err := yaml.Marshal(c.GRPO)
		if err != nil {
			return o, fmt.Errorf("grpo options: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&o); err != nil {
			return o, fmt.Errorf("grpo options: %w", err)
		}
	}
	if need := c.PromptsPerStep * c.GroupSize; o.BatchSize < need {
		o.BatchSize = need
	}
	o.CFGWeight, o.Temperature, o.ImageLogp = c.Sampling.CFGWeight, c.Sampling.Temperature, c.Sampling.ImageLogp
	o.MaxStaleness = int64(c.Staleness)
	if o.MaxStaleness > 0 {
		o.Loss.Clip = true
	}
	if err := o.Validate(); err != nil {
		return o, err
	}
	return o, nil
}

// EffectiveConfig is c with its grpo section replaced by every trainer option in force
// (defaults filled in), which is what a run records as its config.yaml: a run's learning rate,
// KL weight and advantage settings are then readable without knowing the code's defaults.
func EffectiveConfig(c config.Config) (config.Config, error) {
	o, err := TrainerOptions(c)
	if err != nil {
		return c, err
	}
	o = o.WithDefaults()
	b, err := yaml.Marshal(o)
	if err != nil {
		return c, fmt.Errorf("grpo options: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return c, fmt.Errorf("grpo options: %w", err)
	}
	c.GRPO = m
	return c, nil
}
