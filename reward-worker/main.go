// Command reward-worker scores samples with the ensemble of vision experts, and trains, serves and
// evaluates the built-in experts.
package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/startup"
)

func main() { startup.Execute(newRoot()) }

// newRoot is the binary's command tree (tests run it with their own arguments).
func newRoot() *cobra.Command {
	root, p := startup.NewRoot("reward-worker", "Score samples with vision experts")
	root.AddCommand(newTrainExpertsCmd(p), newServeExpertCmd(p), newExpertsEvalCmd(p), newAlignmentCmd(p), newRunCmd(p))
	return root
}
