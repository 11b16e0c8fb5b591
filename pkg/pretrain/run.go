package pretrain

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Summary is what a pretraining run produced (`learner pretrain` prints it as JSON).
type Summary struct {
	Out        string       `json:"out"`
	Config     model.Config `json:"config"`
	Params     int          `json:"params"`
	Steps      int          `json:"steps"`
	Seed       uint64       `json:"seed"`
	Seconds    float64      `json:"seconds"`
	FinalLoss  float64      `json:"final_loss"`
	FinalText  float64      `json:"final_text_nll"`
	FinalImage float64      `json:"final_image_nll"`
}

// Progress is where a run stands after Step of its Steps steps.
type Progress struct {
	Step, Steps int
	Stats       StepStats
	// LossEMA smooths the loss over about 20 steps: single batches are too noisy to read.
	LossEMA float64
}

// Run fits a policy with c on backend by teacher forcing on Examples, and writes the checkpoint
// c.Out with its model config at ConfigPath (and every c.SaveEvery steps an intermediate pair).
// progress, when set, is called with Step 0 before the first step (so a progress bar can start
// its clock when training does) and after every step.
func Run(ctx context.Context, backend backends.Backend, c Config, progress func(Progress), log zerolog.Logger) (Summary, error) {
	if err := c.Validate(); err != nil {
		return Summary{}, err
	}
	mcfg, maker, err := c.examples()
	if err != nil {
		return Summary{}, err
	}
	m, err := model.New(backend, mcfg, c.Seed)
	if err != nil {
		return Summary{}, fmt.Errorf("pretrain: %w", err)
	}
	shards := c.shards(backend)
	tr, err := NewTrainer(m, TrainerOptions{LearningRate: c.LR, WeightDecay: c.WeightDecay, Shards: shards})
	if err != nil {
		return Summary{}, fmt.Errorf("pretrain: %w", err)
	}
	log.Info().Int("params", m.NumParameters()).Int("prompts", maker.Prompts()).Int("steps", c.Steps).
		Int("batch", c.Batch).Int("shards", shards).Int("seq_len", mcfg.SeqLen()).Msg("pretraining")
	if progress == nil {
		progress = func(Progress) {}
	}
	start := time.Now()
	last, err := c.train(ctx, m, tr, maker, progress, log)
	if err != nil {
		return Summary{}, err
	}
	if err := save(m, c.Out); err != nil {
		return Summary{}, err
	}
	sum := Summary{Out: c.Out, Config: mcfg, Params: m.NumParameters(), Steps: c.Steps, Seed: c.Seed,
		Seconds: time.Since(start).Seconds(), FinalLoss: last.Loss, FinalText: last.TextNLL, FinalImage: last.ImageNLL}
	log.Info().Str("out", c.Out).Float64("seconds", sum.Seconds).Msg("checkpoint written")
	return sum, nil
}

// examples reads the vocabularies and prompts that c names and makes the policy config and the
// example stream.
func (c Config) examples() (model.Config, *Examples, error) {
	vocab := tokenizer.New()
	cb, err := vq.Load(c.Codebook)
	if err != nil {
		return model.Config{}, nil, fmt.Errorf("pretrain: %w", err)
	}
	ps, err := prompts.ReadFile(c.Prompts)
	if err != nil {
		return model.Config{}, nil, fmt.Errorf("pretrain: %w", err)
	}
	mcfg, err := c.policyConfig(vocab, cb)
	if err != nil {
		return model.Config{}, nil, fmt.Errorf("pretrain: %w", err)
	}
	maker, err := NewExamples(c.Mix(), mcfg, vocab, cb, ps)
	if err != nil {
		return model.Config{}, nil, fmt.Errorf("pretrain: %s: %w", c.Prompts, err)
	}
	return mcfg, maker, nil
}

// shards resolves Shards 0: the pure-Go backend runs a graph's ops one after another, so it gains
// from one shard per core; XLA already uses the whole device for one.
func (c Config) shards(backend backends.Backend) int {
	if c.Shards > 0 {
		return c.Shards
	}
	if mlx.IsGoBackend(backend) {
		return runtime.GOMAXPROCS(0)
	}
	return 1
}

// train runs the c.Steps steps of m and returns the last one's stats.
func (c Config) train(ctx context.Context, m *model.Model, tr *Trainer, maker *Examples, progress func(Progress),
	log zerolog.Logger) (StepStats, error) {
	batches, stop := prefetch(maker, c.Steps)
	defer stop()
	progress(Progress{Steps: c.Steps})
	start := time.Now()
	var st StepStats
	var ema float64
	for s := 0; s < c.Steps; s++ {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("pretrain: step %d: %w", s, err)
		}
		pb, ok := <-batches
		if !ok {
			return st, fmt.Errorf("pretrain: example stream ended at step %d", s)
		}
		if pb.err != nil {
			return st, fmt.Errorf("pretrain: %w", pb.err)
		}
		if err := tr.SetLearningRate(CosineLR(s, c.Steps, c.Warmup, c.LR, c.MinLRFrac)); err != nil {
			return st, fmt.Errorf("pretrain: step %d: %w", s, err)
		}
		var err error
		if st, err = tr.Step(pb.b); err != nil {
			return st, fmt.Errorf("pretrain: step %d: %w", s, err)
		}
		if s == 0 {
			ema = st.Loss
		}
		ema = 0.95*ema + 0.05*st.Loss
		progress(Progress{Step: s + 1, Steps: c.Steps, Stats: st, LossEMA: ema})
		if (s+1)%50 == 0 || s == c.Steps-1 {
			log.Info().Int("step", s+1).Float64("loss", st.Loss).Float64("loss_ema", ema).Float64("text_nll", st.TextNLL).
				Float64("image_nll", st.ImageNLL).Float64("lr", st.LearningRate).Float64("elapsed_s", time.Since(start).Seconds()).Msg("progress")
		}
		if c.SaveEvery > 0 && (s+1)%c.SaveEvery == 0 && s+1 < c.Steps {
			if err := save(m, stepPath(c.Out, s+1)); err != nil {
				return st, err
			}
		}
	}
	return st, nil
}

type prepared struct {
	b   model.Batch
	err error
}

// prefetch makes the examples of the steps one step ahead, beside the training step, which then
// never waits for rendering and encoding. stop ends the maker early.
func prefetch(maker *Examples, steps int) (batches <-chan prepared, stop func()) {
	out := make(chan prepared, 2)
	done := make(chan struct{})
	go func() {
		defer close(out)
		for s := 0; s < steps; s++ {
			b, err := maker.Batch(s)
			select {
			case out <- prepared{b, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return out, func() { close(done) }
}

// save writes the checkpoint and its model config.
func save(m *model.Model, path string) error {
	if err := m.SaveFile(path, model.SaveOptions{}); err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	if err := model.SaveConfig(ConfigPath(path), m.Config); err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	return nil
}
