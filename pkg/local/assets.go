package local

import (
	"context"
	"fmt"

	"github.com/gomlx/gomlx/backends"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Fallbacks lets laptop mode run on a checkout without trained models: a missing initial policy
// becomes a freshly initialised one, missing expert weights are trained briefly into the run
// directory. Both are announced with a warning; cluster roles never fall back.
type Fallbacks struct {
	// Dir receives fallback expert weights.
	Dir string
	// ExpertSteps of training per expert (default 40).
	ExpertSteps int
}

// initPolicy is the run's initial policy checkpoint, a fresh one when fallbacks allow it.
func initPolicy(backend backends.Backend, cfg config.Config, cb *vq.Codebook, fb *Fallbacks, log zerolog.Logger) ([]byte, error) {
	return model.InitCheckpoint(backend, cfg.PolicyInit, cb, cfg.Seed, fb != nil, log)
}

// plainPlansWithout turns sampling.exclusive_cells off when the initial policy has no cell words
// to mask (the fresh policy a missing policy_init falls back to), with a warning: the fallback is
// there to keep the laptop run going, and the trainer would refuse the setting. It reports whether
// it changed cfg.
func plainPlansWithout(cfg *config.Config, init []byte, log zerolog.Logger) (bool, error) {
	if !cfg.Sampling.ExclusiveCells {
		return false, nil
	}
	ck, err := model.ParseCheckpoint(init)
	if err != nil {
		return false, fmt.Errorf("initial policy: %w", err)
	}
	if len(ck.Config.CellTokens) > 0 {
		return false, nil
	}
	cfg.Sampling.ExclusiveCells = false
	log.Warn().Str("policy", cfg.PolicyInit).Msg("the initial policy has no cell words (cell_tokens): " +
		"plans are sampled without sampling.exclusive_cells")
	return true, nil
}

// ensemble is the run's reward ensemble, trained stand-ins when fallbacks allow it.
func ensemble(ctx context.Context, backend backends.Backend, cfg config.Config, fb *Fallbacks, log zerolog.Logger) (*reward.Ensemble, error) {
	var efb *experts.Fallback
	if fb != nil {
		efb = &experts.Fallback{Dir: fb.Dir, Steps: fb.ExpertSteps}
	}
	return experts.BuildEnsemble(ctx, backend, experts.Source{ConfigFile: cfg.ExpertConfig, URLs: cfg.ExpertURLs, Dir: cfg.Experts, Seed: cfg.Seed}, efb, log)
}
