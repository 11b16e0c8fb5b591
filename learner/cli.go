package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// readUnderFlags reads a settings file with read, then sets again the flags given on the command
// line: they were parsed into the same settings before the file was read, and must win over it.
func readUnderFlags(cmd *cobra.Command, read func() error) error {
	given := map[string]string{}
	cmd.Flags().Visit(func(fl *pflag.Flag) { given[fl.Name] = fl.Value.String() })
	if err := read(); err != nil {
		return err
	}
	for name, v := range given {
		if err := cmd.Flags().Set(name, v); err != nil {
			return fmt.Errorf("flag --%s: %w", name, err)
		}
	}
	return nil
}

// printJSON writes v as indented JSON: the summaries the commands print on stdout.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
