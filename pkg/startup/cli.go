// Package startup is what every role's process sets up before its work: the run config from
// --config and flags (pkg/config), the logger, a context that SIGINT or SIGTERM ends, the compute
// backend, the NATS connection and the run's object store. Binaries call it; role packages never do,
// so a test or laptop mode builds the same roles from the same config without a process around
// them.
package startup

import (
	"errors"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/logging"
)

// CLI holds the flags every role's `run` command shares: --config, --nats, --log-level and the
// run settings of config.Config.Flags.
type CLI struct {
	ConfigPath string
	NATS       string
	LogLevel   string
	LogFormat  string
	flags      config.Config
}

// NewCLI registers the shared flags on cmd.
func NewCLI(cmd *cobra.Command) *CLI {
	c := &CLI{flags: config.Default()}
	f := cmd.Flags()
	f.StringVar(&c.ConfigPath, "config", "", "run config YAML")
	f.StringVar(&c.NATS, "nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	f.StringVar(&c.LogLevel, "log-level", "info", "log level")
	f.StringVar(&c.LogFormat, "log-format", "console", "log format: console or json")
	c.flags.Flags(f)
	return c
}

// Load reads the config file, applies the flags given on the command line over it, validates the
// result and builds the logger. A run id is required: every process of a run must name it.
func (c *CLI) Load(cmd *cobra.Command) (config.Config, zerolog.Logger, error) {
	log, err := logging.New(logging.Options{Level: c.LogLevel, Format: c.LogFormat})
	if err != nil {
		return config.Config{}, log, err
	}
	cfg, err := config.Load(c.ConfigPath)
	if err != nil {
		return config.Config{}, log, err
	}
	if err := config.Overlay(cmd.Flags(), &cfg); err != nil {
		return config.Config{}, log, err
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, log, err
	}
	if cfg.RunID == "" {
		return config.Config{}, log, errors.New("run config: run_id is required (--run-id or run_id in the config file)")
	}
	return cfg, log, nil
}
