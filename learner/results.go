package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/experiment"
)

// newResultsCmd is `learner results DIR`: the table of a directory of experiment runs.
func newResultsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "results DIR",
		Short: "Summarise the experiment runs (*.jsonl) in a directory as a markdown table",
		Long: "Reads every `learner experiment --out` file in DIR and, when present, base.json and\n" +
			"base-no-plan.json (`learner eval --json` of the starting policy on the same prompts), and prints\n" +
			"one row per run: training steps and time, the final held-out oracle mean and its change from the\n" +
			"base, per task type, plan quality, image-follows-plan, extra objects, diversity, and the training\n" +
			"reward and monitored oracle over the first and last tenth of the steps (reward hacking shows as\n" +
			"a reward that climbs while the oracle does not).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return experiment.WriteResults(cmd.OutOrStdout(), args[0])
		},
	}
}
