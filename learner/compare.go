package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/evaluate"
)

// newCompareCmd is `learner compare BASE.json OTHER.json`: two `learner eval --json` results of
// the same prompts and seed side by side, with the paired change of the mean.
func newCompareCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "compare BASE.json OTHER.json",
		Short: "Compare two `learner eval --json` results of the same prompts: per task type and the paired change",
		Long: "Prints both results per task type with the change, plan quality, image-follows-plan and extra\n" +
			"objects per image, and the change of the mean with its 95% interval paired over the prompts\n" +
			"(both evaluations must have sampled the same prompts with the same G and seed).",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return evaluate.CompareFiles(cmd.OutOrStdout(), args[0], args[1])
		},
	}
}
