package runconfig

import (
	"errors"
	"fmt"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bicot-rl/bicot/pkg/logging"
)

// CLI holds the flags every role's `run` command shares: --config, --nats, --log-level and the
// run settings of Config.Flags.
type CLI struct {
	ConfigPath string
	NATS       string
	LogLevel   string
	LogFormat  string
	flags      Config
}

// NewCLI registers the shared flags on cmd.
func NewCLI(cmd *cobra.Command) *CLI {
	c := &CLI{flags: Default()}
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
func (c *CLI) Load(cmd *cobra.Command) (Config, zerolog.Logger, error) {
	log, err := logging.New(logging.Options{Level: c.LogLevel, Format: c.LogFormat})
	if err != nil {
		return Config{}, log, err
	}
	cfg, err := Load(c.ConfigPath)
	if err != nil {
		return Config{}, log, err
	}
	if err := Overlay(cmd.Flags(), &cfg); err != nil {
		return Config{}, log, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, log, err
	}
	if cfg.RunID == "" {
		return Config{}, log, errors.New("run config: run_id is required (--run-id or run_id in the config file)")
	}
	return cfg, log, nil
}

// Overlay copies the flags of Config.Flags that were set on fs onto cfg, so a file's values hold
// unless a flag names them.
func Overlay(fs *pflag.FlagSet, cfg *Config) error {
	scratch := pflag.NewFlagSet("config", pflag.ContinueOnError)
	tmp := *cfg
	tmp.Flags(scratch)
	var err error
	fs.Visit(func(fl *pflag.Flag) {
		if err != nil {
			return
		}
		if sf := scratch.Lookup(fl.Name); sf != nil {
			if e := sf.Value.Set(fl.Value.String()); e != nil {
				err = fmt.Errorf("flag --%s: %w", fl.Name, e)
			}
		}
	})
	if err != nil {
		return err
	}
	*cfg = tmp
	return nil
}
