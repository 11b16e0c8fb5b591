package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/startup"
	"github.com/bicot-rl/bicot/pkg/vq"
)

func newCodebookCmd(p *startup.Process) *cobra.Command {
	c := vq.DefaultBuildConfig()
	var configPath string
	cmd := &cobra.Command{
		Use:   "codebook",
		Short: "Train the VQ image codebook by k-means over rendered scenes and write it",
		Long: "Train the VQ image codebook (k-means++ then Lloyd over the patches of random scenes that cover\n" +
			"every object) and write it in the checksummed codebook format. Prints a JSON summary with the\n" +
			"codebook size, tokens per image and the reconstruction error on held-out random scenes.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath != "" {
				if err := readUnderFlags(cmd, func() error { return vq.ReadBuildConfig(configPath, &c) }); err != nil {
					return err
				}
			}
			log := logging.Component(p.Log(), "codebook")
			sum, err := vq.Build(c)
			if err != nil {
				return err
			}
			if sum.Train.K < sum.Train.RequestedK {
				log.Warn().Int("requested_k", sum.Train.RequestedK).Int("k", sum.Train.K).
					Msg("fewer distinct patches than requested codes: one code per distinct patch")
			}
			log.Info().Str("out", sum.Out).Int("k", sum.K).Int("tokens_per_image", sum.TokensPerImage).
				Float64("heldout_mse", sum.HeldOut.MSE).Msg("codebook written")
			return printJSON(cmd.OutOrStdout(), sum)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML file with grid, cell, k, patch, seed, scenes, iters, heldout, out (flags override it)")
	f.IntVar(&c.Grid, "grid", c.Grid, "grid cells per image side")
	f.IntVar(&c.Cell, "cell", c.Cell, "cell side in pixels")
	f.IntVar(&c.K, "k", c.K, "number of codes (capped at the number of distinct training patches)")
	f.IntVar(&c.Patch, "patch", c.Patch, "patch side in pixels; must divide the cell")
	f.Uint64Var(&c.Seed, "seed", c.Seed, "training seed")
	f.IntVar(&c.Scenes, "scenes", c.Scenes, "training scenes")
	f.IntVar(&c.Iters, "iters", c.Iters, "maximum Lloyd iterations")
	f.IntVar(&c.HeldOut, "heldout", c.HeldOut, "held-out scenes for the reconstruction error")
	f.StringVar(&c.Out, "out", c.Out, "codebook file to write")
	return cmd
}
