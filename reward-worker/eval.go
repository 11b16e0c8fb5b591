package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/startup"
)

func newExpertsEvalCmd(p *startup.Process) *cobra.Command {
	var (
		models, jsonOut, backend string
		n                        int
		seed                     uint64
	)
	cmd := &cobra.Command{
		Use:   "experts-eval",
		Short: "Measure the built-in experts and their ensemble against ground truth on held-out renders",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logging.Component(p.Log(), "experts-eval")
			if n < 2 {
				return fmt.Errorf("--n %d: need at least 2", n)
			}
			b, err := mlx.NewBackend(backend)
			if err != nil {
				return err
			}
			ens, set, err := experts.LocalEnsemble(b, models)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			start := time.Now()
			rep, err := experts.Evaluate(ctx, set, ens, n, seed)
			if err != nil {
				return err
			}
			out, err := json.MarshalIndent(rep, "", "  ")
			if err != nil {
				return err
			}
			if jsonOut != "" {
				if err := os.WriteFile(jsonOut, append(out, '\n'), 0o644); err != nil {
					return fmt.Errorf("write %s: %w", jsonOut, err)
				}
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(out))
			log.Info().Dur("elapsed", time.Since(start)).Msg("experts evaluated")
			return nil
		},
	}
	cmd.Flags().StringVar(&models, "models", "models/experts", "directory of the experts' weights")
	cmd.Flags().StringVar(&jsonOut, "json", "", "also write the report to this file")
	cmd.Flags().IntVar(&n, "n", 512, "samples per metric")
	cmd.Flags().Uint64Var(&seed, "seed", 7, "evaluation seed (draws differ from training draws of any seed)")
	cmd.Flags().StringVar(&backend, "backend", "", "gomlx backend (default $BICOT_BACKEND or go:parallelism=-1)")
	return cmd
}
