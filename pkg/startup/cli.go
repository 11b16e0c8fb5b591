// Package startup is what every role's process sets up before its work: the run config from
// --config and flags (pkg/config), the logger, a context that SIGINT or SIGTERM ends, the compute
// backend, the NATS connection and the run's object store. Binaries call it; role packages never do,
// so a test or laptop mode builds the same roles from the same config without a process around
// them.
package startup

import (
	"errors"
	"fmt"
	"io"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/config"
)

// CLI holds the flags every role's `run` command shares: --config, --nats and the run settings of
// config.Config.Flags (the logger's flags are the process's, see NewRoot).
type CLI struct {
	ConfigPath string
	NATS       string
	// Security: credentials (from the environment) and TLS files (flags), read by Load.
	Security    Security
	sets        config.Sets
	printConfig bool
	proc        *Process
	flags       config.Config
}

// NewCLI registers the shared flags on cmd, a command of the process p.
func NewCLI(cmd *cobra.Command, p *Process) *CLI {
	c := &CLI{flags: config.Default(), proc: p}
	f := cmd.Flags()
	f.StringVar(&c.ConfigPath, "config", "", "run config YAML")
	f.StringVar(&c.NATS, "nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	c.Security.Register(f)
	c.flags.Flags(f)
	c.sets.Register(f, &c.printConfig)
	return c
}

// Load reads the config file, applies the flags given on the command line over it and validates
// the result; the logger is the process's. A run id is required: every process of a run must
// name it.
func (c *CLI) Load(cmd *cobra.Command) (config.Config, zerolog.Logger, error) {
	log := c.proc.Log()
	if err := c.Security.Load(); err != nil {
		return config.Config{}, log, err
	}
	cfg, err := config.Load(c.ConfigPath)
	if err != nil {
		return config.Config{}, log, err
	}
	if err := config.Overlay(cmd.Flags(), &cfg); err != nil {
		return config.Config{}, log, err
	}
	if err := c.sets.Apply(&cfg); err != nil {
		return config.Config{}, log, err
	}
	if c.printConfig {
		return config.Config{}, log, PrintConfig(cmd.OutOrStdout(), cfg)
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, log, err
	}
	if cfg.RunID == "" {
		return config.Config{}, log, errors.New("run config: run_id is required (--run-id or run_id in the config file)")
	}
	return cfg, log, nil
}

// ErrConfigPrinted ends a command that was asked for --print-config: Execute exits 0 on it.
var ErrConfigPrinted = errors.New("config printed")

// PrintConfig writes cfg as the run records it (every default included, credentials redacted)
// after validating it, and returns ErrConfigPrinted.
func PrintConfig(w io.Writer, cfg config.Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	y, err := cfg.Effective().Redacted().YAML()
	if err != nil {
		return fmt.Errorf("print config: %w", err)
	}
	if _, err := w.Write(y); err != nil {
		return err
	}
	return ErrConfigPrinted
}
