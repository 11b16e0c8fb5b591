package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/coord"
	"github.com/bicot-rl/bicot/pkg/laptop"
	"github.com/bicot-rl/bicot/pkg/mlx"
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
		cfg, log, err := cli.Load(cmd)
		if err != nil {
			return err
		}
		if id == "" {
			id = fmt.Sprintf("reward-%d", os.Getpid())
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		backend, err := mlx.NewBackend(cfg.Backend)
		if err != nil {
			return err
		}
		cb, err := vq.Load(cfg.Codebook)
		if err != nil {
			return err
		}
		ens, err := laptop.Ensemble(ctx, backend, cfg, nil, log)
		if err != nil {
			return err
		}
		nc, js, err := bus.Connect(ctx, cli.NATS, bus.ConnectOptions{Name: id})
		if err != nil {
			return err
		}
		defer nc.Close()
		w, err := scorer.New(js, scorer.Options{Run: cfg.RunID, ID: id, Ensemble: ens, Codebook: cb, Heartbeat: cfg.Wire.Heartbeat.D(), Log: log,
			Consume: bus.ConsumeOptions{Fetchers: cfg.Wire.RewardFetchers, AckWait: cfg.Wire.AckWait.D(), MaxDeliver: cfg.Wire.MaxDeliver, PollWait: 30 * time.Second}})
		if err != nil {
			return err
		}
		if !keep {
			var cancel context.CancelFunc
			ctx, cancel = coord.RunEnded(ctx, js, cfg.RunID, cfg.Steps, log)
			defer cancel()
		}
		return w.Run(ctx)
	}
	return cmd
}
