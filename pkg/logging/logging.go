// Package logging builds the zerolog loggers every binary and library uses: structured JSON or
// human-readable console output, a level, and a "component" field on every line.
package logging

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// Options select output format and level.
type Options struct {
	Level  string // trace, debug, info, warn, error
	Format string // "console" (default on a terminal) or "json"
	Out    io.Writer
}

// New returns the root logger.
func New(o Options) (zerolog.Logger, error) {
	out := o.Out
	if out == nil {
		out = os.Stderr
	}
	lvl := zerolog.InfoLevel
	if o.Level != "" {
		l, err := zerolog.ParseLevel(o.Level)
		if err != nil {
			return zerolog.Nop(), fmt.Errorf("log level %q: %w", o.Level, err)
		}
		lvl = l
	}
	switch o.Format {
	case "", "console":
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly, NoColor: !colour(out)}
	case "json":
	default:
		return zerolog.Nop(), fmt.Errorf("log format %q: want console or json", o.Format)
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}

// colour reports whether console output to w may carry colour codes: only on a terminal, and not
// when $NO_COLOR is set (no-color.org). Logs redirected to a file or a pipe stay plain text.
func colour(w io.Writer) bool {
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Component returns a child logger tagged with the component name.
func Component(l zerolog.Logger, name string) zerolog.Logger {
	return l.With().Str("component", name).Logger()
}
