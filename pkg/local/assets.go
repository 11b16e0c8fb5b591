package local

import (
	"context"

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

// ensemble is the run's reward ensemble, trained stand-ins when fallbacks allow it.
func ensemble(ctx context.Context, backend backends.Backend, cfg config.Config, fb *Fallbacks, log zerolog.Logger) (*reward.Ensemble, error) {
	var efb *experts.Fallback
	if fb != nil {
		efb = &experts.Fallback{Dir: fb.Dir, Steps: fb.ExpertSteps}
	}
	return experts.BuildEnsemble(ctx, backend, experts.Source{ConfigFile: cfg.ExpertConfig, URLs: cfg.ExpertURLs, Dir: cfg.Experts, Seed: cfg.Seed}, efb, log)
}
