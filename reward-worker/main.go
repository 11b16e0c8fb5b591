// Command reward-worker scores samples with the ensemble of vision experts, and trains, serves and
// evaluates the built-in experts.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "reward-worker",
		Short:         "Score samples with vision experts",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newTrainExpertsCmd(), newServeExpertCmd(), newExpertsEvalCmd(), newAlignmentCmd(), newRunCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "reward-worker:", err)
		os.Exit(1)
	}
}
