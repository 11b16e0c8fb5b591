// Command learner trains the policy: `pretrain` fits the base model by supervised learning,
// `eval` scores a checkpoint with the oracle, and `run` applies BiCoT-GRPO updates to scored groups
// from the bus.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "learner",
		Short:         "Train and evaluate the policy",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newCodebookCmd(), newPretrainCmd(), newEvalCmd(), newRunCmd(), newExperimentCmd(), newResultsCmd(), newCompareCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "learner:", err)
		os.Exit(1)
	}
}
