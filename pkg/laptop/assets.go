package laptop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gomlx/gomlx/backends"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/runconfig"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
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

// InitPolicy returns the initial policy's checkpoint bytes from path. With fallbacks and no file
// at path, it builds a policy with the default sizes for the tokenizer and codebook, initialised
// from seed.
func InitPolicy(backend backends.Backend, path string, cb *vq.Codebook, seed uint64, fb *Fallbacks, log zerolog.Logger) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if _, err := model.ParseCheckpoint(b); err != nil {
			return nil, fmt.Errorf("initial policy %s: %w", path, err)
		}
		return b, nil
	}
	if fb == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("initial policy: %w", err)
	}
	vocab := tokenizer.New()
	cfg := model.DefaultConfig()
	cfg.TextVocab, cfg.ImageVocab, cfg.ImageTokens = vocab.Size(), cb.K(), cb.TokensPerImage()
	cfg.Special = model.Specials{Pad: tokenizer.Pad, BOS: tokenizer.BOS, EOS: tokenizer.EOS, Plan: tokenizer.Plan,
		ImgStart: tokenizer.ImgStart, Uncond: tokenizer.Uncond}
	m, err := model.New(backend, cfg, seed)
	if err != nil {
		return nil, fmt.Errorf("initial policy: %w", err)
	}
	var buf bytes.Buffer
	if err := m.Save(&buf, model.SaveOptions{}); err != nil {
		return nil, fmt.Errorf("initial policy: %w", err)
	}
	log.Warn().Str("missing", path).Msg("no base policy checkpoint: starting from an untrained policy " +
		"(run `go run ./learner pretrain` to build models/base.safetensors)")
	return buf.Bytes(), nil
}

// Ensemble builds the run's reward ensemble: as the expert config file says when there is one,
// else remote expert servers when the config names them,
// else the built-in experts from the config's directory. With fallbacks and no weights there,
// the experts are trained briefly into fb.Dir first.
func Ensemble(ctx context.Context, backend backends.Backend, c runconfig.Config, fb *Fallbacks, log zerolog.Logger) (*reward.Ensemble, error) {
	if c.ExpertConfig != "" {
		ec, err := experts.LoadConfig(c.ExpertConfig)
		if err != nil {
			return nil, err
		}
		e, err := experts.NewEnsembleFromConfig(backend, ec)
		if err != nil {
			return nil, fmt.Errorf("experts from %s: %w", c.ExpertConfig, err)
		}
		return e, nil
	}
	if len(c.ExpertURLs) > 0 {
		ec := experts.DefaultConfig()
		ec.Models = c.Experts
		ec.Experts = map[string]experts.ExpertConfig{}
		for name, u := range c.ExpertURLs {
			ec.Experts[name] = experts.ExpertConfig{URL: u}
		}
		e, err := experts.NewEnsembleFromConfig(backend, ec)
		if err != nil {
			return nil, fmt.Errorf("remote experts: %w", err)
		}
		return e, nil
	}
	e, err := localDefault(backend, c.Experts)
	if err == nil {
		return e, nil
	}
	if fb == nil || !missingExperts(c.Experts) {
		return nil, fmt.Errorf("experts %s: %w", c.Experts, err)
	}
	dir := filepath.Join(fb.Dir, "experts")
	if e, err := localDefault(backend, dir); err == nil {
		return e, nil
	}
	steps := fb.ExpertSteps
	if steps <= 0 {
		steps = 40
	}
	log.Warn().Str("missing", c.Experts).Str("dir", dir).Int("steps", steps).Msg("no expert weights: training quick " +
		"stand-ins (run `go run ./reward-worker train-experts` for real ones)")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := experts.TrainAll(ctx, backend, dir, experts.TrainOptions{Seed: c.Seed, Steps: steps,
		Command: "laptop fallback", Log: log}); err != nil {
		return nil, fmt.Errorf("fallback experts: %w", err)
	}
	e, err = localDefault(backend, dir)
	if err != nil {
		return nil, fmt.Errorf("fallback experts: %w", err)
	}
	return e, nil
}

// localDefault is the default ensemble (experts.DefaultConfig) over the built-in models in dir.
func localDefault(backend backends.Backend, dir string) (*reward.Ensemble, error) {
	ec := experts.DefaultConfig()
	ec.Models = dir
	return experts.NewEnsembleFromConfig(backend, ec)
}

func missingExperts(dir string) bool {
	for _, name := range experts.Names {
		if _, err := os.Stat(experts.WeightsPath(dir, name)); err != nil {
			return true
		}
	}
	return false
}

// TinyPolicy returns the checkpoint of a small untrained policy (d_model 16, one layer) for the
// tokenizer and the codebook: what tests and benchmarks of the pipeline train, fast on two cores.
func TinyPolicy(backend backends.Backend, cb *vq.Codebook, seed uint64) ([]byte, error) {
	vocab := tokenizer.New()
	cfg := model.Config{TextVocab: vocab.Size(), ImageVocab: cb.K(), TextLen: 40, ImageTokens: cb.TokensPerImage(),
		DModel: 16, Heads: 2, Layers: 1, FF: 32,
		Special: model.Specials{Pad: tokenizer.Pad, BOS: tokenizer.BOS, EOS: tokenizer.EOS, Plan: tokenizer.Plan,
			ImgStart: tokenizer.ImgStart, Uncond: tokenizer.Uncond}}
	m, err := model.New(backend, cfg, seed)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := m.Save(&buf, model.SaveOptions{}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
