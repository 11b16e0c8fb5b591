package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/startup"
)

func newTrainExpertsCmd(p *startup.Process) *cobra.Command {
	var (
		seed    uint64
		out     string
		steps   int
		only    string
		backend string
	)
	cmd := &cobra.Command{
		Use:   "train-experts",
		Short: "Train the built-in reward experts (detector, VQA, HPS, ORM) on rendered scenes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logging.Component(p.Log(), "train-experts")
			if steps < 0 {
				return fmt.Errorf("--steps %d: must be >= 0", steps)
			}
			names := experts.Names
			if only != "" {
				names = strings.Split(only, ",")
				for i, n := range names {
					names[i] = strings.TrimSpace(n)
					if _, err := experts.Rule(names[i]); err != nil {
						return fmt.Errorf("--only: %w", err)
					}
				}
			}
			b, err := mlx.NewBackend(backend)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			command := fmt.Sprintf("go run ./reward-worker train-experts --seed %d --out %s", seed, out)
			if steps > 0 {
				command += fmt.Sprintf(" --steps %d", steps)
			}
			start := time.Now()
			for _, n := range names {
				if err := experts.Train(ctx, b, out, n, experts.TrainOptions{Seed: seed, Steps: steps, Command: command, Log: log}); err != nil {
					return err
				}
			}
			log.Info().Dur("elapsed", time.Since(start)).Str("out", out).Msg("experts trained")
			return nil
		},
	}
	cmd.Flags().Uint64Var(&seed, "seed", 1, "random seed for data and initialisation")
	cmd.Flags().StringVar(&out, "out", "models/experts", "directory for the weights files")
	cmd.Flags().IntVar(&steps, "steps", 0, "optimiser steps per expert (0: the defaults)")
	cmd.Flags().StringVar(&only, "only", "", "comma-separated experts to train (default all)")
	cmd.Flags().StringVar(&backend, "backend", "", "gomlx backend (default $BICOT_BACKEND or go:parallelism=-1)")
	return cmd
}
