// Command learner trains the policy: `pretrain` fits the base model by supervised learning,
// `eval` scores a checkpoint with the oracle, and `run` applies BiCoT-GRPO updates to scored groups
// from the bus.
package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/startup"
)

func main() { startup.Execute(newRoot()) }

// newRoot is the binary's command tree (tests run it with their own arguments).
func newRoot() *cobra.Command {
	root, p := startup.NewRoot("learner", "Train and evaluate the policy")
	root.AddCommand(newCodebookCmd(p), newPretrainCmd(p), newEvalCmd(p), newRunCmd(p), newExperimentCmd(p), newResultsCmd(), newCompareCmd(), newReportCmd(p))
	return root
}
