package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/rewardworker"
	"github.com/bicot-rl/bicot/pkg/startup"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// newRunCmd is `reward-worker run`: one reward worker of a run.
func newRunCmd(p *startup.Process) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Score a run's samples from NATS with the expert ensemble",
		Long: "Pulls samples from the run's sample queue, decodes their images, scores them with the built-in\n" +
			"experts (experts: DIR) or remote expert servers (expert_urls) and publishes the scored samples.\n" +
			"Exits 0 when the run's last step is learned (unless --keep-running).",
		Args: cobra.NoArgs,
	}
	cli := startup.NewWorkerCLI(cmd, p, "reward")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		r, err := cli.Start(cmd)
		if err != nil {
			return err
		}
		defer r.Close()
		cfg := r.Config
		cb, err := vq.Load(cfg.Codebook)
		if err != nil {
			return err
		}
		ens, err := experts.BuildEnsemble(r.Ctx, r.Backend, experts.Source{ConfigFile: cfg.ExpertConfig, URLs: cfg.ExpertURLs, Dir: cfg.Experts, Seed: cfg.Seed}, nil, r.Log)
		if err != nil {
			return err
		}
		w, err := rewardworker.New(r.Ctx, rewardworker.Deps{ID: cli.ID, JS: r.JS, Ensemble: ens, Codebook: cb, Metrics: r.Metrics, Log: r.Log}, cfg)
		if err != nil {
			return err
		}
		ctx, cancel := r.WorkerContext(cli.KeepRunning)
		defer cancel()
		return w.Run(ctx)
	}
	return cmd
}
