// Command rollout-worker samples G (plan, image) pairs per prompt from the current policy.
package main

import (
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/startup"
)

func main() { startup.Execute(newRoot()) }

// newRoot is the binary's command tree (tests run it with their own arguments).
func newRoot() *cobra.Command {
	root, p := startup.NewRoot("rollout-worker", "Sample plans and images from the policy")
	root.AddCommand(newRunCmd(p))
	return root
}
