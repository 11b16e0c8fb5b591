package experiment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/pretrain"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/trainer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// Settings are what an experiment adds to the run config: its bounds, the evaluation schedule,
// dynamic sampling, and where its record and final policy go.
type Settings struct {
	// Budget is the training time (evaluations excluded); 0 leaves the config's steps alone to
	// bound the run.
	Budget    time.Duration
	EvalEvery time.Duration
	// EvalLimit keeps the first N evaluation prompts per task type (0: the whole eval set);
	// EvalG 0 evaluates nothing.
	EvalLimit, EvalG int
	EvalSeed         uint64
	NoInitialEval    bool
	// Informative, MinSpread and MaxDraws are Options' dynamic sampling.
	Informative bool
	MinSpread   float64
	MaxDraws    int
	// Out, when set, receives the record: a JSON line with the settings, then one per step and
	// per evaluation (WriteResults tabulates a directory of them).
	Out string
	// Save, when set, receives the final policy checkpoint (.safetensors).
	Save string
}

// DefaultSettings are `learner experiment`'s defaults: ten minutes of training evaluated every
// five on 30 prompts per task type.
func DefaultSettings() Settings {
	return Settings{Budget: 10 * time.Minute, EvalEvery: 5 * time.Minute, EvalLimit: 30, EvalG: 4, EvalSeed: 1, MaxDraws: 24}
}

// The kinds of record line.
const (
	kindConfig = "config"
	kindStep   = "step"
	kindEval   = "eval"
)

// RunFromConfig runs the run config's learning problem (prompts, P, G, sampling, grpo options
// and supervised anchor, experts) with Run, writes the record and the final policy that s asks
// for, and returns the run. Each step and evaluation is logged as it happens.
func RunFromConfig(ctx context.Context, c config.Config, s Settings, log zerolog.Logger) (res Result, err error) {
	if err := c.Validate(); err != nil {
		return Result{}, err
	}
	o, topts, err := optionsFromConfig(ctx, c, s, log)
	if err != nil {
		return Result{}, err
	}
	rec, err := createRecord(s.Out)
	if err != nil {
		return Result{}, err
	}
	defer func() { err = errors.Join(err, rec.close()) }()
	if err := rec.write(settingsLine(c, topts, s)); err != nil {
		return Result{}, err
	}
	o.OnStep = func(st Step) error {
		logStep(log, st)
		return rec.write(map[string]any{"kind": kindStep, "step": st})
	}
	o.OnEval = func(p Point) error {
		logEval(log, p)
		return rec.write(map[string]any{"kind": kindEval, "point": p})
	}
	if res, err = Run(ctx, o); err != nil {
		return res, err
	}
	if s.Save != "" {
		if err := o.Trainer.Policy().SaveFile(s.Save, model.SaveOptions{}); err != nil {
			return res, fmt.Errorf("experiment: save: %w", err)
		}
	}
	return res, nil
}

// optionsFromConfig loads the policy, codebook, prompts and experts that c names and makes Run's
// options (without the callbacks), and the trainer options for the record.
func optionsFromConfig(ctx context.Context, c config.Config, s Settings, log zerolog.Logger) (Options, trainer.Options, error) {
	backend, err := mlx.NewBackend(c.Backend)
	if err != nil {
		return Options{}, trainer.Options{}, err
	}
	policy, cb, err := evaluate.LoadPolicy(backend, c.PolicyInit, c.Codebook)
	if err != nil {
		return Options{}, trainer.Options{}, err
	}
	tr, topts, err := newTrainer(c, policy, cb)
	if err != nil {
		return Options{}, topts, err
	}
	train, err := prompts.ReadPool(c.Prompts, c.PromptRepeats)
	if err != nil {
		return Options{}, topts, err
	}
	ens, err := experts.BuildEnsemble(ctx, backend, experts.Source{ConfigFile: c.ExpertConfig, URLs: c.ExpertURLs, Dir: c.Experts, Seed: c.Seed}, nil, log)
	if err != nil {
		return Options{}, topts, err
	}
	eval, err := evalPrompts(c, s)
	if err != nil {
		return Options{}, topts, err
	}
	sp := c.Sampling
	return Options{
		Trainer: tr, Codebook: cb, Reward: ens, Train: train, P: c.PromptsPerStep, G: c.GroupSize, Seed: c.Seed,
		Sampling:    bus.SamplingFrom(sp),
		Informative: s.Informative, MinSpread: s.MinSpread, MaxDraws: s.MaxDraws,
		Steps: c.Steps, Budget: s.Budget, Eval: eval,
		EvalOpts: evaluate.Options{G: s.EvalG, Seed: s.EvalSeed, CFGWeight: sp.CFGWeight, Temperature: sp.Temperature,
			NoPlan: sp.MaxPlanTokens == 0, ExclusiveCells: sp.ExclusiveCells},
		EvalEvery: s.EvalEvery, SkipInitialEval: s.NoInitialEval,
	}, topts, nil
}

// newTrainer makes the run's trainer of policy, with the supervised anchor when grpo.sft_coef
// asks for one.
func newTrainer(c config.Config, policy *model.Model, cb *vq.Codebook) (*trainer.Trainer, trainer.Options, error) {
	topts, err := trainer.OptionsFor(c)
	if err != nil {
		return nil, topts, err
	}
	tr, err := trainer.NewTrainer(policy, topts)
	if err != nil {
		return nil, topts, err
	}
	if topts.SFTCoef <= 0 {
		return tr, topts, nil
	}
	src, err := pretrain.Anchor(c, policy.Config, cb)
	if err != nil {
		return nil, topts, fmt.Errorf("experiment: %w", err)
	}
	if err := tr.SetSupervised(src); err != nil {
		return nil, topts, err
	}
	return tr, topts, nil
}

// evalPrompts are the held-out prompts evaluated (none when EvalG is 0).
func evalPrompts(c config.Config, s Settings) ([]prompts.Prompt, error) {
	if s.EvalG <= 0 {
		return nil, nil
	}
	eval, err := prompts.ReadFile(c.Eval.Prompts)
	if err != nil {
		return nil, err
	}
	return evaluate.LimitPerType(eval, s.EvalLimit), nil
}

// settingsLine is the record's first line: everything that made the run, so that a record
// explains itself.
func settingsLine(c config.Config, topts trainer.Options, s Settings) map[string]any {
	return map[string]any{"kind": kindConfig, "config": c, "trainer": topts, "informative": s.Informative,
		"min_spread": s.MinSpread, "max_draws": s.MaxDraws, "budget_seconds": s.Budget.Seconds(),
		"eval_limit_per_type": s.EvalLimit, "eval_g": s.EvalG, "eval_seed": s.EvalSeed}
}

func logStep(log zerolog.Logger, s Step) {
	st := s.Stats
	log.Info().Int("step", s.Step).Float64("train_s", s.TrainSeconds).Int("drawn", s.Drawn).Float64("reward", st.RewardMean).
		Interface("per_expert", st.PerExpert).Float64("kl", st.KL).Float64("zero_std", st.ZeroStdRatio).Msg("step")
}

func logEval(log zerolog.Logger, p Point) {
	log.Info().Int("step", p.Step).Float64("train_s", p.TrainSeconds).Float64("mean", p.Eval.Mean).
		Float64("plan_quality", p.Eval.PlanQuality).Float64("follows_plan", p.Eval.ImageFollowsPlan).
		Interface("task_types", p.Eval.TaskTypes).Msg("eval")
}

// record writes the JSON lines of Settings.Out; with no file it writes nothing.
type record struct {
	path string
	f    *os.File
	enc  *json.Encoder
}

func createRecord(path string) (*record, error) {
	if path == "" {
		return &record{}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("experiment: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("experiment: %w", err)
	}
	return &record{path: path, f: f, enc: json.NewEncoder(f)}, nil
}

func (r *record) write(line map[string]any) error {
	if r.enc == nil {
		return nil
	}
	if err := r.enc.Encode(line); err != nil {
		return fmt.Errorf("experiment: write %s: %w", r.path, err)
	}
	return nil
}

func (r *record) close() error {
	if r.f == nil {
		return nil
	}
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("experiment: write %s: %w", r.path, err)
	}
	return nil
}
