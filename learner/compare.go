package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/prompts"
)

// newCompareCmd is `learner compare BASE.json OTHER.json`: two `learner eval --json` results of
// the same prompts and seed side by side, with the paired change of the mean.
func newCompareCmd() *cobra.Command {
	var forms string
	var limit int
	cmd := &cobra.Command{
		Use:   "compare BASE.json OTHER.json",
		Short: "Compare two `learner eval --json` results of the same prompts: per task type and the paired change",
		Long: "Prints both results per task type with the change, plan quality, image-follows-plan and extra\n" +
			"objects per image, and the change of the mean with its 95% interval paired over the prompts\n" +
			"(both evaluations must have sampled the same prompts with the same G and seed). With --forms,\n" +
			"the prompt file evaluated (and --limit as given to learner eval), it adds the scores by what a\n" +
			"prompt asks for - objects and attributes, a count, a relation - for every task type whose\n" +
			"prompts mix them (knowledge) and over all prompts.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ps []prompts.Prompt
			if forms != "" {
				all, err := prompts.ReadFile(forms)
				if err != nil {
					return err
				}
				ps = evaluate.LimitPerType(all, limit)
			}
			return evaluate.CompareFiles(cmd.OutOrStdout(), args[0], args[1], ps)
		},
	}
	cmd.Flags().StringVar(&forms, "forms", "", "the evaluated prompt file (JSONL): add the scores by prompt form")
	cmd.Flags().IntVar(&limit, "limit", 0, "with --forms: the prompts per task type the evaluations used (0: all)")
	return cmd
}
