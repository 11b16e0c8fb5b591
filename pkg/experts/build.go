package experts

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gomlx/gomlx/backends"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/reward"
)

// Source says where a run's experts come from: the run config's expert_config, expert_urls and
// experts settings, in that order of precedence.
type Source struct {
	// ConfigFile is an expert ensemble YAML (LoadConfig).
	ConfigFile string
	// URLs name remote expert servers by expert.
	URLs map[string]string
	// Dir holds the built-in experts' weights.
	Dir string
	// Seed seeds fallback training.
	Seed uint64
}

// Fallback lets laptop mode run on a checkout without trained experts: missing expert weights are
// trained briefly into Dir, with a warning. Cluster roles never fall back.
type Fallback struct {
	// Dir receives fallback expert weights (under Dir/experts).
	Dir string
	// Steps of training per expert (default 40).
	Steps int
}

// BuildEnsemble builds the run's reward ensemble: as the expert config file says when there is
// one, else remote expert servers when URLs name them, else the built-in experts from Dir. With a
// fallback and no weights in Dir, the experts are trained briefly into fb.Dir first. Every role
// that scores (reward workers, laptop mode, the experiment harness) builds it here.
func BuildEnsemble(ctx context.Context, backend backends.Backend, c Source, fb *Fallback, log zerolog.Logger) (*reward.Ensemble, error) {
	if c.ConfigFile != "" {
		ec, err := LoadConfig(c.ConfigFile)
		if err != nil {
			return nil, err
		}
		e, err := NewEnsembleFromConfig(backend, ec)
		if err != nil {
			return nil, fmt.Errorf("experts from %s: %w", c.ConfigFile, err)
		}
		return e, nil
	}
	if len(c.URLs) > 0 {
		ec := DefaultConfig()
		ec.Models = c.Dir
		ec.Experts = map[string]ExpertConfig{}
		for name, u := range c.URLs {
			ec.Experts[name] = ExpertConfig{URL: u}
		}
		e, err := NewEnsembleFromConfig(backend, ec)
		if err != nil {
			return nil, fmt.Errorf("remote experts: %w", err)
		}
		return e, nil
	}
	e, err := localDefault(backend, c.Dir)
	if err == nil {
		return e, nil
	}
	if fb == nil || !missingExperts(c.Dir) {
		return nil, fmt.Errorf("experts %s: %w", c.Dir, err)
	}
	dir := filepath.Join(fb.Dir, "experts")
	if e, err := localDefault(backend, dir); err == nil {
		return e, nil
	}
	steps := fb.Steps
	if steps <= 0 {
		steps = 40
	}
	log.Warn().Str("missing", c.Dir).Str("dir", dir).Int("steps", steps).Msg("no expert weights: training quick " +
		"stand-ins (run `go run ./reward-worker train-experts` for real ones)")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := TrainAll(ctx, backend, dir, TrainOptions{Seed: c.Seed, Steps: steps,
		Command: "laptop fallback", Log: log}); err != nil {
		return nil, fmt.Errorf("fallback experts: %w", err)
	}
	e, err = localDefault(backend, dir)
	if err != nil {
		return nil, fmt.Errorf("fallback experts: %w", err)
	}
	return e, nil
}

// localDefault is the default ensemble (DefaultConfig) over the built-in models in dir.
func localDefault(backend backends.Backend, dir string) (*reward.Ensemble, error) {
	ec := DefaultConfig()
	ec.Models = dir
	return NewEnsembleFromConfig(backend, ec)
}

func missingExperts(dir string) bool {
	for _, name := range Names {
		if _, err := os.Stat(WeightsPath(dir, name)); err != nil {
			return true
		}
	}
	return false
}
