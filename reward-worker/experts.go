package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/mlx"
)

// logFlags are the logging flags every expert command takes.
type logFlags struct{ level, format string }

func (l *logFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.level, "log-level", "info", "log level (trace, debug, info, warn, error)")
	cmd.Flags().StringVar(&l.format, "log-format", "console", "log format (console or json)")
}

func (l *logFlags) logger(component string) (zerolog.Logger, error) {
	log, err := logging.New(logging.Options{Level: l.level, Format: l.format})
	if err != nil {
		return log, err
	}
	return logging.Component(log, component), nil
}

func newTrainExpertsCmd() *cobra.Command {
	var (
		seed    uint64
		out     string
		steps   int
		only    string
		backend string
		lf      logFlags
	)
	cmd := &cobra.Command{
		Use:   "train-experts",
		Short: "Train the built-in reward experts (detector, VQA, HPS, ORM) on rendered scenes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lf.logger("train-experts")
			if err != nil {
				return err
			}
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
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
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
	lf.add(cmd)
	return cmd
}

// interruptible returns a context that ends on interrupt (Ctrl-C).
func interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt)
}
