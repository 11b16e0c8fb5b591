package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/startup"

	"github.com/bicot-rl/bicot/pkg/rolloutworker"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// newRunCmd is `rollout-worker run`: one rollout worker of a run.
func newRunCmd(p *startup.Process) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Sample prompt batches of a run from NATS with the announced policy",
		Long: "Pulls BatchTasks from the run's task queue, loads the announced policy version from the\n" +
			"store (checksum-verified), samples G plans and images per prompt and publishes the samples.\n" +
			"Exits 0 when the run's last step is learned (unless --keep-running).",
		Args: cobra.NoArgs,
	}
	cli := startup.NewWorkerCLI(cmd, p, "rollout")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		r, err := cli.Start(cmd)
		if err != nil {
			return err
		}
		defer r.Close()
		cfg := r.Config
		var cb *vq.Codebook
		if cfg.Sampling.AttachPNG {
			if cb, err = vq.Load(cfg.Codebook); err != nil {
				return err
			}
		}
		st, err := r.OpenStore()
		if err != nil {
			return err
		}
		w, err := rolloutworker.New(r.Ctx, rolloutworker.Deps{ID: cli.ID, JS: r.JS, Backend: r.Backend, Store: st, Codebook: cb, Metrics: r.Metrics, Log: r.Log}, cfg)
		if err != nil {
			return err
		}
		ctx, cancel := r.WorkerContext(cli.KeepRunning)
		defer cancel()
		return w.Run(ctx)
	}
	return cmd
}
