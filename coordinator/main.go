// Command coordinator owns a training run: replicated run state, prompt batches handed out over
// NATS JetStream, group tracking, the HTTP API and metrics. `coordinator local` runs every role in
// one process for a laptop.
package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/startup"
)

func main() { startup.Execute(newRoot()) }

// newRoot is the binary's command tree (tests run it with their own arguments).
func newRoot() *cobra.Command {
	root, p := startup.NewRoot("coordinator", "Coordinate a distributed BiCoT-GRPO run")
	root.AddCommand(promptsCmd(), newLocalCmd(p), newRunCmd(p), newNatsServerCmd(), newResumeCmd(p), newDashboardCmd(p))
	return root
}
