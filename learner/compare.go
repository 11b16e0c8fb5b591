package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/prompts"
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
			a, err := readEvalResult(args[0])
			if err != nil {
				return err
			}
			b, err := readEvalResult(args[1])
			if err != nil {
				return err
			}
			return printCompare(cmd.OutOrStdout(), a, b)
		},
	}
}

func readEvalResult(path string) (evalResult, error) {
	var r evalResult
	data, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("compare: %w", err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("compare: %s: %w", path, err)
	}
	if len(r.PromptScores) == 0 {
		return r, fmt.Errorf("compare: %s has no prompt_scores (written by an older learner eval?)", path)
	}
	return r, nil
}

func printCompare(w io.Writer, a, b evalResult) error {
	if a.G != b.G || a.Seed != b.Seed || a.Prompts != b.Prompts || a.NoPlan != b.NoPlan {
		return fmt.Errorf("compare: different evaluations: G %d/%d, seed %d/%d, %d/%d prompts, no-plan %v/%v",
			a.G, b.G, a.Seed, b.Seed, a.Prompts, b.Prompts, a.NoPlan, b.NoPlan)
	}
	d, half, err := evaluate.Compare(a.Result, b.Result)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%-20s %8s %8s %8s\n", "", "base", "other", "change")
	for _, t := range prompts.InReportOrder(a.TaskTypes) {
		fmt.Fprintf(w, "%-20s %8.3f %8.3f %+8.3f\n", t, a.TaskTypes[t], b.TaskTypes[t], b.TaskTypes[t]-a.TaskTypes[t])
	}
	row := func(name string, x, y float64) { fmt.Fprintf(w, "%-20s %8.3f %8.3f %+8.3f\n", name, x, y, y-x) }
	row("mean", a.Mean, b.Mean)
	row("plan quality", a.PlanQuality, b.PlanQuality)
	row("image follows plan", a.ImageFollowsPlan, b.ImageFollowsPlan)
	row("extra per image", a.Checks["extra_per_image"], b.Checks["extra_per_image"])
	row("diversity", a.Diversity, b.Diversity)
	fmt.Fprintf(w, "mean change %+.3f ± %.3f (95%% interval, paired over %d prompts, %d samples each)\n", d, half, a.Prompts, a.N)
	return nil
}
