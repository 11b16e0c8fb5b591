package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/laptop"
	"github.com/bicot-rl/bicot/pkg/learnrole"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/runconfig"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// newRunCmd is `learner run`: the learner of a run whose roles are separate processes.
func newRunCmd() *cobra.Command {
	var id, coordURL string
	var coordinators []string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Learn a run's scored groups from NATS with BiCoT-GRPO",
		Long: "Resumes from the run's newest checkpoint in the store (or starts from policy_init as version 0),\n" +
			"announces the policy, assembles complete groups of scored samples, trains one step per P groups,\n" +
			"publishes each new version's weights, writes metrics.jsonl and checkpoints. Exits 0 after the\n" +
			"run's last step.",
		Args: cobra.NoArgs,
	}
	cli := runconfig.NewCLI(cmd)
	cmd.Flags().StringVar(&id, "id", "learner", "learner id")
	cmd.Flags().StringVar(&coordURL, "coordinator", "", "coordinator status API (http://host:port): checkpoints then hold the run state and data cursor")
	cmd.Flags().StringSliceVar(&coordinators, "coordinators", nil, "run-state endpoints (--raft-http) of the coordinator cluster, any or all of them: the leader is found and followed across failovers; checkpoints then hold the run state and data cursor")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, log, err := cli.Load(cmd)
		if err != nil {
			return err
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
		init, err := laptop.InitPolicy(backend, cfg.PolicyInit, cb, cfg.Seed, nil, log)
		if err != nil {
			return err
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
		var runState func() ([]byte, error)
		switch {
		case len(coordinators) > 0:
			cl, err := runstate.NewClient(coordinators, log)
			if err != nil {
				return err
			}
			defer cl.Close()
			runState = learnrole.RunStateFromCluster(cl)
		case coordURL != "":
			runState = learnrole.RunStateFrom(coordURL)
		}
		l, err := learnrole.New(ctx, js, learnrole.Options{Config: cfg, ID: id, Backend: backend, Store: st, Init: init, Codebook: cb,
			RunState:  runState,
			Heartbeat: cfg.Wire.Heartbeat.D(), Log: log,
			Consume: bus.ConsumeOptions{AckWait: cfg.Wire.AckWait.D(), MaxDeliver: cfg.Wire.MaxDeliver, PollWait: 30 * time.Second}})
		if err != nil {
			return err
		}
		return l.Run(ctx)
	}
	return cmd
}
