package startup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/logging"
)

// DefaultLogLevelAnnotation on a command changes --log-level's default for it (e.g. "warn" for a
// command whose progress lines go to stdout).
const DefaultLogLevelAnnotation = "bicot/default-log-level"

// Process is a binary's process-wide set-up, shared by all its commands: the persistent
// --log-level and --log-format flags and the logger built from them before any command runs.
// Execute runs the binary under a context that SIGINT or SIGTERM cancels (cmd.Context()).
type Process struct {
	logLevel  string
	logFormat string
	log       zerolog.Logger
	errOut    io.Writer
}

// NewRoot returns a binary's root command with the persistent flags and a PersistentPreRunE that
// builds the logger, and the Process its commands read the logger from.
func NewRoot(use, short string) (*cobra.Command, *Process) {
	p := &Process{log: zerolog.Nop(), errOut: os.Stderr}
	root := &cobra.Command{Use: use, Short: short, SilenceUsage: true, SilenceErrors: true}
	f := root.PersistentFlags()
	f.StringVar(&p.logLevel, "log-level", "info", "log level: trace, debug, info, warn or error")
	f.StringVar(&p.logFormat, "log-format", "console", "log format: console or json")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		level := p.logLevel
		if d, ok := cmd.Annotations[DefaultLogLevelAnnotation]; ok && !cmd.Flags().Changed("log-level") {
			level = d
		}
		log, err := logging.New(logging.Options{Level: level, Format: p.logFormat})
		if err != nil {
			return fmt.Errorf("--log-level/--log-format: %w", err)
		}
		p.log = log
		return nil
	}
	return root, p
}

// Log is the process's logger (after the root's PersistentPreRunE; a no-op logger before).
func (p *Process) Log() zerolog.Logger { return p.log }

// Execute runs root under a context that SIGINT or SIGTERM cancels and exits the process with
// status 1 after printing the error, prefixed with the binary's name.
func Execute(root *cobra.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil && !errors.Is(err, ErrConfigPrinted) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", root.Name(), err)
		os.Exit(1)
	}
}
