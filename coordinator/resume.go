package main

import (
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/coordinator"
	"github.com/bicot-rl/bicot/pkg/local"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/startup"
)

// newResumeCmd is `coordinator resume TARGET`: continue a run from its newest good checkpoint.
func newResumeCmd(p *startup.Process) *cobra.Command {
	var (
		httpAddr          string
		rf                raftFlags
		keep, inProcess   bool
		noFallback, reset bool
		rollouts, rewards int
		out               string
		override          = config.Default()
	)
	cmd := &cobra.Command{
		Use:   "resume TARGET",
		Short: "Continue a run from its newest committed checkpoint (s3://bucket/prefix/RUN or a local runs/RUN)",
		Long: "Finds the run's newest committed checkpoint in the store (a corrupted or partial newest one is\n" +
			"skipped with a log line and the previous good one used), restores the run state stored with it\n" +
			"(step, policy version, data cursor) into a fresh raft directory and coordinates the rest of the\n" +
			"run with the config stored in the checkpoint (flags such as --steps override it). The learner\n" +
			"resumes from the same checkpoint by itself. With --local every role runs in this process, as in\n" +
			"`coordinator local`; otherwise this is one coordinator (start each of a cluster's coordinators\n" +
			"with the same --peers) and the workers and learner are separate processes.\n" +
			"In strictly on-policy runs (staleness 0) the continued steps are bit-identical to an\n" +
			"uninterrupted run's.",
		Args: cobra.ExactArgs(1),
	}
	f := cmd.Flags()
	var natsURL string
	var sec startup.Security
	f.StringVar(&natsURL, "nats", "nats://127.0.0.1:4222", "NATS server URL(s) (not with --local)")
	sec.Register(f)
	f.StringVar(&httpAddr, "http", "127.0.0.1:8080", "status API address")
	rf.register(f)
	f.BoolVar(&keep, "keep-serving", false, "keep serving the status API after the run is done")
	f.BoolVar(&inProcess, "local", false, "run every role in this process (embedded NATS)")
	f.BoolVar(&reset, "reset-streams", true, "delete and re-create the run's NATS streams before coordinating (default true without --peers; with --peers pass it to the first coordinator started only)")
	f.IntVar(&rollouts, "rollout-workers", 1, "rollout workers (--local)")
	f.IntVar(&rewards, "reward-workers", 1, "reward workers (--local)")
	f.StringVar(&out, "out", "runs", "directory for the run's local files with --local and an S3 store (raft, config)")
	f.BoolVar(&noFallback, "no-fallback", false, "with --local: fail instead of using an untrained policy / quick experts when models are missing (as `coordinator local`)")
	f.IntVar(&override.Steps, "steps", 0, "train until this many steps (default: the stored config's)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		log := logging.Component(p.Log(), "coordinator")
		ctx := cmd.Context()
		rt, err := startup.OpenRunTarget(ctx, args[0], log)
		if err != nil {
			return err
		}
		storeSpec, run := rt.StoreSpec, rt.Run
		r, err := coordinator.LoadResume(ctx, rt.Store, run, log)
		rt.Close()
		if err != nil {
			return err
		}
		cfg := r.Config
		cfg.RunID, cfg.Store = run, storeSpec
		if cmd.Flags().Changed("steps") {
			cfg.Steps = override.Steps
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		if r.State.Ended {
			log.Warn().Int64("steps", r.State.Step).Stringer("time_budget", cfg.TimeBudget.D()).
				Msg("the run's time budget ended it: nothing to train (start a new run from its last checkpoint's weights to train on)")
		} else if int64(cfg.Steps) < r.State.Step {
			log.Warn().Int("steps", cfg.Steps).Int64("checkpoint_step", r.Manifest.Step).Msg("the checkpoint is at or past the last step: nothing to train")
		}
		if inProcess {
			outDir := out
			if !strings.HasPrefix(storeSpec, "s3://") {
				outDir = storeSpec
			}
			raftDir := filepath.Join(outDir, run, "raft")
			if err := seed(raftDir, "coordinator-0", "127.0.0.1:0", r, log); err != nil {
				return err
			}
			cfg.Eval.LimitPerType = 0
			var fb *local.Fallbacks
			if !noFallback {
				// The same fallbacks as `coordinator local`, so a run started without trained
				// models resumes with the same stand-ins (the learner itself resumes from the
				// checkpoint; the initial policy is not used).
				fb = &local.Fallbacks{}
			}
			_, err = local.Run(ctx, local.Options{Config: cfg, RolloutWorkers: rollouts, RewardWorkers: rewards, Out: outDir,
				HTTPAddr: "127.0.0.1:0", Progress: cmd.OutOrStdout(), SkipEval: true, Fallbacks: fb,
				Log: log.Level(max(log.GetLevel(), zerolog.WarnLevel))})
			return err
		}
		nodeCfg, servers, err := rf.nodeConfig(run)
		if err != nil {
			return err
		}
		if _, err := coordinator.MoveAside(nodeCfg.DataDir); err != nil {
			return err
		}
		if err := coordinator.SeedRaft(nodeCfg.DataDir, servers, r.State); err != nil {
			return err
		}
		if len(servers) > 1 && !cmd.Flags().Changed("reset-streams") {
			// In a cluster the coordinators start one after another: a late one resetting the
			// streams would drop what the leader has dispatched meanwhile.
			reset = false
		}
		if err := sec.Load(); err != nil {
			return err
		}
		return serve(ctx, cfg, nodeCfg, natsURL, &sec, httpAddr, keep, reset, log)
	}
	return cmd
}

// seed moves an existing raft directory aside and seeds a single-node one with the resumed state.
func seed(dir, id, addr string, r coordinator.Resume, log zerolog.Logger) error {
	old, err := coordinator.MoveAside(dir)
	if err != nil {
		return err
	}
	if old != "" {
		log.Info().Str("old", old).Msg("previous raft state moved aside")
	}
	return coordinator.SeedRaft(dir, []runstate.Peer{{ID: id, RaftAddr: addr}}, r.State)
}
