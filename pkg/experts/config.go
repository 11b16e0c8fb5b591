package experts

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/gomlx/gomlx/backends"
	"gopkg.in/yaml.v3"

	"github.com/bicot-rl/bicot/pkg/oracle"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// Config chooses, expert by expert, the built-in model or a remote server, and sets weights and
// timeouts; it is the "experts" section of a reward worker's YAML configuration:
//
//	models: models/experts
//	timeout: 60s
//	experts:
//	  detector: {url: "http://10.0.0.5:8301"}   # GroundingDINO behind the protocol
//	  hps: {url: "http://10.0.0.6:8303", hps_offset: 0.27, hps_scale: 0.03, weight: 1}
//	remote: {max_batch: 32, call_timeout: 30s, retries: 3, backoff: 200ms}
//
// Experts left out use the built-in model with their default weight (DefaultWeights: chosen from
// the measured agreement with the oracle on the base policy's own samples, docs/experts.md) and
// the default rules (the detector's relation and extra-object checks, decided VQA answers).
// Weight 0 keeps an expert as a monitor: it runs and its reward is logged, but adds nothing to
// the total. T2I-R1's own ensemble (equal weights, reference rules) is configs/experts/reference.yaml.
// The diagnostic expert "oracle" (the exact scene parser, see Oracle) joins only when named:
//
//	experts:
//	  oracle: {weight: 1}     # the oracle as the reward: the machinery's ceiling
//	  detector: {weight: 0}   # ... the reference experts as monitors
type Config struct {
	Models  string                  `yaml:"models"`
	Timeout time.Duration           `yaml:"timeout"`
	Experts map[string]ExpertConfig `yaml:"experts"`
	Remote  RemoteOptions           `yaml:"remote"`
}

// ExpertConfig configures one expert.
type ExpertConfig struct {
	// URL of an expert server; empty for the built-in model.
	URL string `yaml:"url"`
	// Weight in the ensemble sum (default DefaultWeights; the reference uses 1 for each).
	Weight *float64 `yaml:"weight"`
	// ReferenceRule (detector only) uses the reference rule: relations checked on spatial
	// prompts only, extra objects free (reward.ReferenceDetectorRule).
	ReferenceRule bool `yaml:"reference_rule"`
	// SoftAnswers (vqa only) averages P(yes)/(P(yes)+P(no)) as the reference does, instead of
	// decided answers (reward.VQARule.Hard).
	SoftAnswers bool `yaml:"soft_answers"`
	// HPSOffset and HPSScale set the preference score squash (hps only; default 0 and 1, right
	// for the built-in model).
	HPSOffset *float64 `yaml:"hps_offset"`
	HPSScale  *float64 `yaml:"hps_scale"`
	// PartialCredit (oracle only) is what an inexact image scores at most, in [0, 1): the
	// fraction of the prompt it meets times this (oracle.Result.WithPartialCredit). Default
	// oracle.PartialCredit (0.1), the evaluation's strict score; more gives the groups no sample
	// gets right an order, as the detector's and VQA's fractions do.
	PartialCredit *float64 `yaml:"partial_credit"`
}

// RemoteOptions apply to every remote expert (see reward.RemoteConfig; zero values take its
// defaults).
type RemoteOptions struct {
	MaxBatch    int           `yaml:"max_batch"`
	CallTimeout time.Duration `yaml:"call_timeout"`
	Retries     int           `yaml:"retries"`
	Backoff     time.Duration `yaml:"backoff"`
}

// DefaultWeights are the ensemble weights of experts a configuration leaves unweighted. The
// detector (with relation and extra-object checks) and the VQA model (decided answers) rank the
// base policy's samples the way the oracle does (within-group Spearman 0.82 together); the
// built-in preference and outcome models rank them much worse (0.33, 0.32) and every weight
// given to them lowered the ensemble's agreement, so they run as monitors. Remote servers of
// the real models (HPS v2.1, a LLaVA ORM) should be weighted from their own measurement
// (`reward-worker alignment --expert-config`).
var DefaultWeights = map[string]float64{Detector: 1, VQA: 1, HPS: 0, ORM: 0, Oracle: 0}

// DefaultConfig is the four built-in experts from models/experts with DefaultWeights.
func DefaultConfig() Config {
	return Config{Models: "models/experts", Timeout: DefaultTimeout}
}

// LoadConfig reads a YAML file over DefaultConfig; unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("experts config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("experts config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("experts config %s: %w", path, err)
	}
	return c, nil
}

// Validate checks names, weights, the squash and the durations.
func (c Config) Validate() error {
	var errs []error
	for name, e := range c.Experts {
		if _, err := Rule(name); err != nil {
			errs = append(errs, err)
			continue
		}
		if e.Weight != nil && (math.IsNaN(*e.Weight) || math.IsInf(*e.Weight, 0) || *e.Weight < 0) {
			errs = append(errs, fmt.Errorf("expert %s: weight %v must be finite and >= 0", name, *e.Weight))
		}
		if e.ReferenceRule && name != Detector {
			errs = append(errs, fmt.Errorf("expert %s: reference_rule applies to the detector only", name))
		}
		if e.SoftAnswers && name != VQA {
			errs = append(errs, fmt.Errorf("expert %s: soft_answers applies to vqa only", name))
		}
		if (e.HPSOffset != nil || e.HPSScale != nil) && name != HPS {
			errs = append(errs, fmt.Errorf("expert %s: hps_offset/hps_scale apply to hps only", name))
		}
		if e.HPSOffset != nil && (math.IsNaN(*e.HPSOffset) || math.IsInf(*e.HPSOffset, 0)) {
			errs = append(errs, fmt.Errorf("expert %s: hps_offset %v must be finite", name, *e.HPSOffset))
		}
		if e.HPSScale != nil && !(*e.HPSScale > 0 && !math.IsInf(*e.HPSScale, 0)) {
			errs = append(errs, fmt.Errorf("expert %s: hps_scale %v must be finite and > 0", name, *e.HPSScale))
		}
		if e.PartialCredit != nil && name != Oracle {
			errs = append(errs, fmt.Errorf("expert %s: partial_credit applies to the oracle only", name))
		}
		if e.PartialCredit != nil && !(*e.PartialCredit >= 0 && *e.PartialCredit < 1) {
			errs = append(errs, fmt.Errorf("expert %s: partial_credit %v must be in [0, 1)", name, *e.PartialCredit))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v < 0", c.Timeout))
	}
	if c.Remote.MaxBatch < 0 || c.Remote.CallTimeout < 0 || c.Remote.Backoff < 0 {
		errs = append(errs, fmt.Errorf("remote: negative max_batch, call_timeout or backoff in %+v", c.Remote))
	}
	return errors.Join(errs...)
}

// NewEnsembleFromConfig builds the ensemble the configuration describes, loading only the
// built-in models it uses (onto backend, which may be nil when every expert is remote).
func NewEnsembleFromConfig(backend backends.Backend, c Config) (*reward.Ensemble, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("experts config: %w", err)
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	var xs []reward.Expert
	names := Names
	if _, ok := c.Experts[Oracle]; ok {
		names = append(append([]string{}, Names...), Oracle)
	}
	for _, name := range names {
		ec := c.Experts[name]
		rule, err := Rule(name)
		if err != nil {
			return nil, err
		}
		switch {
		case name == Detector && !ec.ReferenceRule:
			rule = reward.DefaultDetectorRule()
		case name == VQA:
			rule = reward.VQARule{Hard: !ec.SoftAnswers}
		}
		if name == HPS {
			r := reward.DefaultHPSRule()
			if ec.HPSOffset != nil {
				r.Offset = *ec.HPSOffset
			}
			if ec.HPSScale != nil {
				r.Scale = *ec.HPSScale
			}
			rule = r
		}
		var b reward.Backend
		if ec.URL != "" {
			b, err = reward.NewRemoteBackend(reward.RemoteConfig{
				URL: ec.URL, Output: rule.Output(), MaxBatch: c.Remote.MaxBatch, Timeout: c.Remote.CallTimeout,
				Retries: c.Remote.Retries, Backoff: c.Remote.Backoff,
			})
		} else if name == Oracle {
			pc := oracle.PartialCredit
			if ec.PartialCredit != nil {
				pc = *ec.PartialCredit
			}
			b, err = NewOracleBackend(scene.DefaultConfig(), pc)
		} else {
			if backend == nil {
				return nil, fmt.Errorf("expert %s: built-in model needs a compute backend", name)
			}
			b, err = LoadModel(backend, c.Models, name)
		}
		if err != nil {
			return nil, fmt.Errorf("expert %s: %w", name, err)
		}
		w := DefaultWeights[name]
		if ec.Weight != nil {
			w = *ec.Weight
		}
		xs = append(xs, reward.Expert{Name: name, Backend: b, Rule: rule, Weight: w, Timeout: timeout})
	}
	return reward.NewEnsemble(xs...)
}
