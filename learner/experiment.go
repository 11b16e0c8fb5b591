package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/experiment"
	"github.com/bicot-rl/bicot/pkg/local"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/startup"
)

// newExperimentCmd is `learner experiment`: BiCoT-GRPO in one process with a learning curve.
func newExperimentCmd(p *startup.Process) *cobra.Command {
	s := experiment.DefaultSettings()
	var configPath string
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
	f.StringVar(&configPath, "config", "configs/local.yaml", "run config (YAML)")
	f.DurationVar(&s.Budget, "budget", s.Budget, "training time (evaluations excluded); 0 = --steps only")
	f.DurationVar(&s.EvalEvery, "eval-every", s.EvalEvery, "training time between evaluations (0: start and end only)")
	f.IntVar(&s.EvalLimit, "eval-limit", s.EvalLimit, "evaluation prompts per task type (0: the whole eval set)")
	f.IntVar(&s.EvalG, "eval-g", s.EvalG, "samples per evaluation prompt")
	f.Uint64Var(&s.EvalSeed, "eval-seed", s.EvalSeed, "evaluation sampling seed")
	f.BoolVar(&s.NoInitialEval, "no-initial-eval", s.NoInitialEval, "skip the evaluation before training")
	f.BoolVar(&s.Informative, "informative", s.Informative, "dynamic sampling: draw more prompts until P groups have a reward spread >= --min-spread")
	f.Float64Var(&s.MinSpread, "min-spread", s.MinSpread, "reward spread a group needs to count as informative")
	f.IntVar(&s.MaxDraws, "max-draws", s.MaxDraws, "prompts sampled per step at most with --informative")
	f.StringVar(&s.Out, "out", "", "write steps and evaluations as JSON lines here")
	f.StringVar(&s.Save, "save", "", "write the final policy checkpoint (.safetensors) here")
	steps := f.Int("steps", 0, "training steps (default: the config's when --budget is 0, else until the budget)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := config.Load(configPath)
		if err != nil {
			return err
		}
		if cmd.Flags().Changed("steps") {
			c.Steps = *steps
		} else if s.Budget > 0 {
			c.Steps = 1 << 30 // the budget bounds the run
		}
		log := p.Log()
		res, err := experiment.RunFromConfig(cmd.Context(), c, s, logging.Component(log, "experiment"))
		if err != nil {
			return err
		}
		if n := len(res.Curve); n > 0 {
			var first *evaluate.Result
			if n > 1 {
				first = &res.Curve[0].Eval
			}
			local.PrintEval(cmd.OutOrStdout(), first, res.Curve[n-1].Eval)
		}
		return nil
	}
	return cmd
}
