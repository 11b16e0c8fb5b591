package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/report"
	"github.com/bicot-rl/bicot/pkg/startup"
)

// newReportCmd is `learner report RUN`: a run's self-contained HTML report.
func newReportCmd(p *startup.Process) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "report RUN",
		Short: "Write a run's report as one self-contained HTML file (RUN: runs/ID or s3://bucket/prefix/ID)",
		Long: "Reads the run's metrics, eval.json (when the run has one) and kept samples from its store and\n" +
			"writes one HTML file with everything inline (CSS, SVG charts, images as data: URIs): reward per\n" +
			"expert, KL, loss and step time over the steps, the oracle evaluation per task type before and\n" +
			"after training, and the first and last kept steps' samples side by side.",
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "output file (default <run-id>-report.html; - writes to stdout)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		log := logging.Component(p.Log(), "report")
		ctx := cmd.Context()
		rt, err := startup.OpenRunTarget(ctx, args[0], log)
		if err != nil {
			return err
		}
		defer rt.Close()
		run := rt.Run
		r, err := report.Build(ctx, rt.Store, run)
		if err != nil {
			return err
		}
		if out == "-" {
			return r.WriteHTML(cmd.OutOrStdout())
		}
		if out == "" {
			out = run + "-report.html"
		}
		if err := writeAtomically(out, r.WriteHTML); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		log.Info().Str("file", out).Int("steps", len(r.Steps)).Msg("report written")
		fmt.Fprintln(cmd.OutOrStdout(), out)
		return nil
	}
	return cmd
}

// writeAtomically writes through a temporary file renamed into place, so a failed report never leaves
// a half-written one under the name.
func writeAtomically(name string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(name), ".report-*.html")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	w := bufio.NewWriter(f)
	if err := write(w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}
