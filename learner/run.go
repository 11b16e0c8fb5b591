package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/bus"
	"github.com/bicot-rl/bicot/pkg/learner"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/startup"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// newRunCmd is `learner run`: the learner of a run whose roles are separate processes.
func newRunCmd(p *startup.Process) *cobra.Command {
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
	cli := startup.NewCLI(cmd, p)
	cmd.Flags().StringVar(&id, "id", "learner", "learner id")
	cmd.Flags().StringVar(&coordURL, "coordinator", "", "coordinator status API (http://host:port): checkpoints then hold the run state and data cursor")
	cmd.Flags().StringSliceVar(&coordinators, "coordinators", nil, "run-state endpoints (--raft-http) of the coordinator cluster, any or all of them: the leader is found and followed across failovers; checkpoints then hold the run state and data cursor")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		r, err := cli.Start(cmd, bus.RoleLearner, id)
		if err != nil {
			return err
		}
		defer r.Close()
		cfg, log := r.Config, r.Log
		cb, err := vq.Load(cfg.Codebook)
		if err != nil {
			return err
		}
		init, err := model.InitCheckpoint(r.Backend, cfg.PolicyInit, cb, cfg.Seed, false, log)
		if err != nil {
			return err
		}
		st, err := r.OpenStore()
		if err != nil {
			return err
		}
		var runState func() ([]byte, error)
		switch {
		case len(coordinators) > 0:
			cl, err := runstate.NewClientWith(coordinators, runstate.ClientOptions{Token: cli.Security.ClusterToken, TLS: cli.Security.TLS}, log)
			if err != nil {
				return err
			}
			defer cl.Close()
			runState = learner.RunStateFromCluster(cl)
		case coordURL != "":
			if runState, err = learner.RunStateFrom(coordURL, cli.Security.APIToken, cli.Security.TLS); err != nil {
				return err
			}
		}
		l, err := learner.New(r.Ctx, learner.Deps{ID: id, JS: r.JS, Backend: r.Backend, Store: st, Init: init,
			Codebook: cb, RunState: runState, Metrics: r.Metrics, Log: log}, cfg)
		if err != nil {
			return err
		}
		return l.Run(r.Ctx)
	}
	return cmd
}
