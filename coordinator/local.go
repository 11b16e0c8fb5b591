package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/local"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/startup"
)

// newLocalCmd is `coordinator local`: the whole run in one process.
func newLocalCmd(p *startup.Process) *cobra.Command {
	var (
		configPath, out, httpAddr   string
		rollouts, rewards, natsPort int
		noEval, noFallback          bool
		printConfig                 bool
		sets                        config.Sets
		cfg                         = laptopDefaults()
	)
	cmd := &cobra.Command{
		Use:   "local",
		Short: "Run every role in one process (embedded NATS, single-node raft, local store)",
		Long: "Starts an embedded nats-server with JetStream on loopback, a single-node raft coordinator,\n" +
			"N rollout workers, M reward workers and the learner in this process, trains for --steps steps,\n" +
			"writes the run under <out>/<run-id>/ and prints the oracle evaluation of the final policy.\n" +
			"Settings: configs/laptop.yaml unless --config names a file, then the flags, then --set key.path=value.",
		Args: cobra.NoArgs,
		// Progress lines go to stdout; the log stays quiet unless asked.
		Annotations: map[string]string{startup.DefaultLogLevelAnnotation: "warn"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := p.Log()
			if configPath != "" {
				base, err := config.Load(configPath)
				if err != nil {
					return err
				}
				// Flags given on the command line win over the file.
				if err := config.Overlay(cmd.Flags(), &base); err != nil {
					return err
				}
				cfg = base
			}
			if err := sets.Apply(&cfg); err != nil {
				return err
			}
			if printConfig {
				return startup.PrintConfig(cmd.OutOrStdout(), cfg)
			}
			ctx := cmd.Context()
			var fb *local.Fallbacks
			if !noFallback {
				fb = &local.Fallbacks{}
			}
			cfg.Eval.LimitPerType = max(cfg.Eval.LimitPerType, 0)
			res, err := local.Run(ctx, local.Options{Config: cfg, RolloutWorkers: rollouts, RewardWorkers: rewards, Out: out,
				HTTPAddr: httpAddr, NATSPort: natsPort, Progress: cmd.OutOrStdout(), Fallbacks: fb, SkipEval: noEval,
				Log: logging.Component(log, "local")})
			if err != nil && ctx.Err() != nil && res.Dir != "" {
				// Interrupted (Ctrl-C, SIGTERM): say how to go on, not just "context canceled".
				if _, serr := os.Stat(filepath.Join(res.Dir, "checkpoints")); serr != nil {
					return fmt.Errorf("local run interrupted after %d of %d steps, before its first checkpoint (every %d steps): nothing to resume",
						res.Steps, cfg.Steps, cfg.CheckpointEvery)
				}
				return fmt.Errorf("local run interrupted after %d of %d steps; continue it from its newest checkpoint with:\n  coordinator resume %s --local",
					res.Steps, cfg.Steps, res.Dir)
			}
			if err != nil {
				return fmt.Errorf("local run: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "run config YAML (default: the settings of configs/laptop.yaml)")
	cfg.Flags(f)
	sets.Register(f, &printConfig)
	f.IntVar(&rollouts, "rollout-workers", 2, "rollout workers (two sample a step's tasks side by side on 2 cores)")
	f.IntVar(&rewards, "reward-workers", 1, "reward workers")
	f.StringVar(&out, "out", "runs", "directory the run is written under")
	f.StringVar(&httpAddr, "http", "127.0.0.1:0", "coordinator status API address")
	f.IntVar(&natsPort, "nats-port", 0, "embedded NATS port (0: any free port)")
	f.BoolVar(&noEval, "no-eval", false, "skip the final oracle evaluation")
	f.BoolVar(&noFallback, "no-fallback", false, "fail instead of using an untrained policy / quick experts when models are missing")
	return cmd
}

// laptopDefaults are the settings of configs/laptop.yaml, so `coordinator local` needs no file:
// the learning run of the README (P 8 x G 8 for 360 steps, about 29 minutes on 2 cores with two
// rollout workers, then the initial and final policy on 1,440 held-out samples each).
func laptopDefaults() config.Config {
	c := config.Default()
	c.PromptsPerStep, c.GroupSize, c.PromptsPerTask, c.Steps = 8, 8, 2, 360
	c.PromptRepeats = map[string]int{"spatial": 0, "non": 0, "complex": 0}
	c.Sampling.ExclusiveCells = true
	c.Staleness = 1
	c.TimeBudget = config.Duration(30 * time.Minute)
	c.CheckpointEvery = 10
	c.Wire.Heartbeat = config.Duration(2e9)
	c.RedispatchAfter = config.Duration(5 * time.Minute)
	c.Prompts = "data/prompts/rl.jsonl"
	c.GRPO.Optimizer.LR, c.GRPO.SFTCoef, c.GRPO.MinSpread = 0.001, 1, 0.05
	c.Eval.LimitPerType, c.Eval.G = 40, 4
	return c
}
