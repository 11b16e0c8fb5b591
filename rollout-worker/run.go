package main

import (
	"context"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/coord"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/rollout"
	"github.com/bicot-rl/bicot/pkg/runconfig"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// newRunCmd is `rollout-worker run`: one rollout worker of a run.
func newRunCmd() *cobra.Command {
	var id string
	var keep bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Sample prompt batches of a run from NATS with the announced policy",
		Long: "Pulls BatchTasks from the run's task queue, loads the announced policy version from the\n" +
			"store (checksum-verified), samples G plans and images per prompt and publishes the samples.\n" +
			"Exits 0 when the run's last step is learned (unless --keep-running).",
		Args: cobra.NoArgs,
	}
	cli := runconfig.NewCLI(cmd)
	cmd.Flags().StringVar(&id, "id", "", "worker id (default rollout-<pid>)")
	cmd.Flags().BoolVar(&keep, "keep-running", false, "keep running after the run's last step")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, log, err := cli.Load(cmd)
		if err != nil {
			return err
		}
		if id == "" {
			id = "rollout-" + strconv.Itoa(os.Getpid())
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		backend, err := mlx.NewBackend(cfg.Backend)
		if err != nil {
			return err
		}
		var cb *vq.Codebook
		if cfg.Sampling.AttachPNG {
			if cb, err = vq.Load(cfg.Codebook); err != nil {
				return err
			}
		}
		st, closeStore, err := runconfig.OpenStore(ctx, cfg.Store, log)
		if err != nil {
			return err
		}
		defer closeStore()
		nc, js, err := bus.Connect(ctx, cli.NATS, bus.ConnectOptions{Name: id})
		if err != nil {
			return err
		}
		defer nc.Close()
		w, err := rollout.New(js, rollout.Options{Run: cfg.RunID, ID: id, Backend: backend, Store: st, Codebook: cb,
			AttachPNG: cfg.Sampling.AttachPNG, Heartbeat: cfg.Wire.Heartbeat.D(), Log: log,
			Consume: bus.ConsumeOptions{Fetchers: cfg.Wire.RolloutFetchers, AckWait: cfg.Wire.AckWait.D(), MaxDeliver: cfg.Wire.MaxDeliver, PollWait: 30 * time.Second}})
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
