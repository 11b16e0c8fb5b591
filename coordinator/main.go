// Command coordinator owns a training run: replicated run state, prompt batches handed out over
// NATS JetStream, group tracking, the HTTP API and metrics. `coordinator local` runs every role in
// one process for a laptop.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "coordinator",
		Short:         "Coordinate a distributed BiCoT-GRPO run",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(promptsCmd(), newLocalCmd(), newRunCmd(), newNatsServerCmd(), newResumeCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "coordinator:", err)
		os.Exit(1)
	}
}
