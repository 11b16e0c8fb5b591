package main

import (
	"context"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/coord"
	"github.com/bicot-rl/bicot/pkg/laptop"
	"github.com/bicot-rl/bicot/pkg/runconfig"
	"github.com/bicot-rl/bicot/pkg/scorer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// newRunCmd is `reward-worker run`: one reward worker of a run.
func newRunCmd() *cobra.Command {
	var id string
	var keep bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Score a run's samples from NATS with the expert ensemble",
		Long: "Pulls samples from the run's sample queue, decodes their images, scores them with the built-in\n" +
			"experts (experts: DIR) or remote expert servers (expert_urls) and publishes the scored samples.\n" +
			"Exits 0 when the run's last step is learned (unless --keep-running).",
		Args: cobra.NoArgs,
	}
	cli := runconfig.NewCLI(cmd)
	cmd.Flags().StringVar(&id, "id", "", "worker id (default reward-<pid>)")
	cmd.Flags().BoolVar(&keep, "keep-running", false, "keep running after the run's last step")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if id == "" {
			id = "reward-" + strconv.Itoa(os.Getpid())
		}
		r, err := cli.Start(cmd, id)
		if err != nil {
			return err
		}
		defer r.Close()
		cfg := r.Config
		cb, err := vq.Load(cfg.Codebook)
		if err != nil {
			return err
		}
		ens, err := laptop.Ensemble(r.Ctx, r.Backend, cfg, nil, r.Log)
		if err != nil {
			return err
		}
		w, err := scorer.New(r.JS, scorer.Options{Run: cfg.RunID, ID: id, Ensemble: ens, Codebook: cb, Heartbeat: cfg.Wire.Heartbeat.D(),
			Log: r.Log, Consume: r.Consume(cfg.Wire.RewardFetchers)})
		if err != nil {
			return err
		}
		ctx := r.Ctx
		if !keep {
			var cancel context.CancelFunc
			ctx, cancel = coord.RunEnded(ctx, r.JS, cfg.RunID, cfg.Steps, r.Log)
			defer cancel()
		}
		return w.Run(ctx)
	}
	return cmd
}
