package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/experiment"
	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/learner"
	"github.com/bicot-rl/bicot/pkg/local"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/trainer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

type experimentOptions struct {
	Config, Out, Save string
	Budget, EvalEvery time.Duration
	EvalLimit, EvalG  int
	EvalSeed          uint64
	Informative       bool
	NoInitialEval     bool
	MinSpread         float64
	MaxDraws          int
	LogLevel          string
}

// newExperimentCmd is `learner experiment`: BiCoT-GRPO in one process with a learning curve.
func newExperimentCmd() *cobra.Command {
	o := experimentOptions{Budget: 10 * time.Minute, EvalEvery: 5 * time.Minute, EvalLimit: 30, EvalG: 4, EvalSeed: 1, MaxDraws: 24, LogLevel: "info"}
	var c config.Config
	cmd := &cobra.Command{
		Use:   "experiment",
		Short: "Train with BiCoT-GRPO in one process and record a learning curve on held-out prompts",
		Long: "Runs the run config's learning problem (prompts, P, G, sampling, grpo options, experts) without\n" +
			"the bus: sample, decode, reward, update, for a budget of training time (evaluations excluded),\n" +
			"evaluating the policy with the oracle before training, every --eval-every and at the end.\n" +
			"Writes one JSON line per step and per evaluation to --out. The same trainer, sampler and\n" +
			"experts as a distributed run; docs/learner.md has the curves and ablations made with it.",
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&o.Config, "config", "configs/local.yaml", "run config (YAML)")
	f.DurationVar(&o.Budget, "budget", o.Budget, "training time (evaluations excluded); 0 = --steps only")
	f.DurationVar(&o.EvalEvery, "eval-every", o.EvalEvery, "training time between evaluations (0: start and end only)")
	f.IntVar(&o.EvalLimit, "eval-limit", o.EvalLimit, "evaluation prompts per task type (0: the whole eval set)")
	f.IntVar(&o.EvalG, "eval-g", o.EvalG, "samples per evaluation prompt")
	f.Uint64Var(&o.EvalSeed, "eval-seed", o.EvalSeed, "evaluation sampling seed")
	f.BoolVar(&o.NoInitialEval, "no-initial-eval", o.NoInitialEval, "skip the evaluation before training")
	f.BoolVar(&o.Informative, "informative", o.Informative, "dynamic sampling: draw more prompts until P groups have a reward spread >= --min-spread")
	f.Float64Var(&o.MinSpread, "min-spread", o.MinSpread, "reward spread a group needs to count as informative")
	f.IntVar(&o.MaxDraws, "max-draws", o.MaxDraws, "prompts sampled per step at most with --informative")
	f.StringVar(&o.Out, "out", "", "write steps and evaluations as JSON lines here")
	f.StringVar(&o.Save, "save", "", "write the final policy checkpoint (.safetensors) here")
	f.StringVar(&o.LogLevel, "log-level", o.LogLevel, "log level")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		loaded, err := config.Load(o.Config)
		if err != nil {
			return err
		}
		c = loaded
		if steps, _ := cmd.Flags().GetInt("steps"); cmd.Flags().Changed("steps") {
			c.Steps = steps
		} else if o.Budget > 0 {
			c.Steps = 1 << 30 // the budget bounds the run
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runExperiment(ctx, cmd.OutOrStdout(), c, o)
	}
	f.Int("steps", 0, "training steps (default: the config's when --budget is 0, else until the budget)")
	return cmd
}

func runExperiment(ctx context.Context, stdout io.Writer, c config.Config, o experimentOptions) error {
	if err := c.Validate(); err != nil {
		return err
	}
	log, err := logging.New(logging.Options{Level: o.LogLevel})
	if err != nil {
		return err
	}
	log = logging.Component(log, "experiment")
	backend, err := mlx.NewBackend(c.Backend)
	if err != nil {
		return err
	}
	cb, err := vq.Load(c.Codebook)
	if err != nil {
		return err
	}
	policy, err := model.LoadFile(backend, c.PolicyInit)
	if err != nil {
		return err
	}
	topts, err := learner.TrainerOptions(c)
	if err != nil {
		return err
	}
	tr, err := trainer.NewTrainer(policy, topts)
	if err != nil {
		return err
	}
	train, err := prompts.ReadFile(c.Prompts)
	if err != nil {
		return err
	}
	if topts.SFTCoef > 0 {
		src, err := learner.Anchor(c, policy.Config, cb)
		if err != nil {
			return fmt.Errorf("experiment: %w", err)
		}
		if err := tr.SetSupervised(src); err != nil {
			return err
		}
	}
	ens, err := experts.BuildEnsemble(ctx, backend, experts.Source{ConfigFile: c.ExpertConfig, URLs: c.ExpertURLs, Dir: c.Experts, Seed: c.Seed}, nil, log)
	if err != nil {
		return err
	}
	var eval []prompts.Prompt
	if o.EvalG > 0 {
		if eval, err = prompts.ReadFile(c.Eval.Prompts); err != nil {
			return err
		}
		eval = evaluate.LimitPerType(eval, o.EvalLimit)
	}
	var out *json.Encoder
	if o.Out != "" {
		if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
			return err
		}
		fh, err := os.Create(o.Out)
		if err != nil {
			return fmt.Errorf("experiment: %w", err)
		}
		defer fh.Close()
		out = json.NewEncoder(fh)
		if err := out.Encode(map[string]any{"kind": "config", "config": c, "trainer": topts, "informative": o.Informative,
			"min_spread": o.MinSpread, "max_draws": o.MaxDraws, "budget_seconds": o.Budget.Seconds(),
			"eval_limit_per_type": o.EvalLimit, "eval_g": o.EvalG, "eval_seed": o.EvalSeed}); err != nil {
			return err
		}
	}
	res, err := experiment.Run(ctx, experiment.Options{
		Trainer: tr, Codebook: cb, Reward: ens, Train: train, P: c.PromptsPerStep, G: c.GroupSize, Seed: c.Seed,
		Sampling: experiment.Sampling{Temperature: c.Sampling.Temperature, CFGWeight: c.Sampling.CFGWeight,
			MaxPlanTokens: c.Sampling.MaxPlanTokens, ImageLogp: c.Sampling.ImageLogp},
		Informative: o.Informative, MinSpread: o.MinSpread, MaxDraws: o.MaxDraws,
		Steps: c.Steps, Budget: o.Budget, Eval: eval,
		EvalOpts: evaluate.Options{G: o.EvalG, Seed: o.EvalSeed, CFGWeight: c.Sampling.CFGWeight, Temperature: c.Sampling.Temperature,
			NoPlan: c.Sampling.MaxPlanTokens == 0},
		EvalEvery: o.EvalEvery, SkipInitialEval: o.NoInitialEval,
		OnStep: func(s experiment.Step) error {
			st := s.Stats
			log.Info().Int("step", s.Step).Float64("train_s", s.TrainSeconds).Int("drawn", s.Drawn).Float64("reward", st.RewardMean).
				Interface("per_expert", st.PerExpert).Float64("kl", st.KL).Float64("zero_std", st.ZeroStdRatio).Msg("step")
			if out != nil {
				return out.Encode(map[string]any{"kind": "step", "step": s})
			}
			return nil
		},
		OnEval: func(p experiment.Point) error {
			log.Info().Int("step", p.Step).Float64("train_s", p.TrainSeconds).Float64("mean", p.Eval.Mean).
				Float64("plan_quality", p.Eval.PlanQuality).Float64("follows_plan", p.Eval.ImageFollowsPlan).
				Interface("task_types", p.Eval.TaskTypes).Msg("eval")
			if out != nil {
				return out.Encode(map[string]any{"kind": "eval", "point": p})
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	if n := len(res.Curve); n > 1 {
		first, last := res.Curve[0].Eval, res.Curve[n-1].Eval
		local.PrintEval(stdout, &first, last)
	} else if n == 1 {
		local.PrintEval(stdout, nil, res.Curve[0].Eval)
	}
	if o.Save != "" {
		if err := policy.SaveFile(o.Save, model.SaveOptions{}); err != nil {
			return fmt.Errorf("experiment: save: %w", err)
		}
	}
	return nil
}
