// Command rollout-worker samples G (plan, image) pairs per prompt from the current policy.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "rollout-worker",
		Short:         "Sample plans and images from the policy",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "rollout-worker:", err)
		os.Exit(1)
	}
}
