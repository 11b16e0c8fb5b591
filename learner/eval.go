package main

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/evaluate"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/startup"
)

func newEvalCmd(p *startup.Process) *cobra.Command {
	o := evaluate.DefaultCheckpointOptions()
	var backend, jsonOut string
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Sample the evaluation prompts with a checkpoint and score the images with the oracle",
		Long: "Sample G images per evaluation prompt (plan first, then image tokens), decode them with the\n" +
			"codebook and score them with the oracle. Prints a per-task-type table, and optionally writes\n" +
			"JSON {task_types, mean, plan_quality, diversity, ...} and a PNG grid of samples captioned with\n" +
			"their prompt and plans. Fixed seeds: the same flags give the same numbers.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logging.Component(p.Log(), "eval")
			if err := o.Validate(); err != nil {
				return err // before the backend, which announces itself
			}
			b, err := mlx.NewBackend(backend)
			if err != nil {
				return fmt.Errorf("eval: %w", err)
			}
			o.Progress = evalBar(cmd.ErrOrStderr())
			rep, err := evaluate.Checkpoint(cmd.Context(), b, o)
			if err != nil {
				return err
			}
			rep.WriteTable(cmd.OutOrStdout())
			if jsonOut != "" {
				if err := rep.WriteFile(jsonOut); err != nil {
					return err
				}
			}
			log.Info().Int("samples", rep.N).Float64("mean", rep.Mean).Float64("seconds", rep.Seconds).Msg("evaluated")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Checkpoint, "checkpoint", o.Checkpoint, "policy checkpoint (.safetensors)")
	f.StringVar(&o.Prompts, "prompts", o.Prompts, "evaluation prompt file (JSONL)")
	f.StringVar(&o.Codebook, "codebook", o.Codebook, "VQ codebook file")
	f.BoolVar(&o.NoPlan, "no-plan", o.NoPlan, "give an empty plan instead of sampling one (ablation)")
	f.BoolVar(&o.ExclusiveCells, "exclusive-cells", o.ExclusiveCells, "sample plans that never name a cell twice (a run's sampling.exclusive_cells)")
	f.IntVar(&o.Limit, "limit", o.Limit, "evaluate only the first N prompts of each task type (0: all)")
	f.IntVar(&o.G, "g", o.G, "samples per prompt")
	f.IntVar(&o.Batch, "batch", o.Batch, "prompts sampled together")
	f.Uint64Var(&o.Seed, "seed", o.Seed, "sampling seed")
	f.Float64Var(&o.CFG, "cfg", o.CFG, "classifier-free guidance weight on image tokens (0: off)")
	f.Float64Var(&o.Temperature, "temperature", o.Temperature, "sampling temperature")
	f.StringVar(&jsonOut, "json", "", "write the results as JSON to this file")
	f.StringVar(&o.Grid, "grid", o.Grid, "write a PNG grid of samples to this file")
	f.StringVar(&o.Samples, "samples", o.Samples, "write every sample's prompt, plan, drawn scene and score as JSONL to this file")
	f.IntVar(&o.GridPerType, "grid-per-type", o.GridPerType, "prompts per task type in the grid")
	f.StringVar(&backend, "backend", "", "gomlx backend (default go:parallelism=-1)")
	return cmd
}

// evalBar shows the prompts done on w, ending its line after the last one so that the table
// starts on its own.
func evalBar(w io.Writer) func(done, total int) {
	var bar *progressbar.ProgressBar
	return func(done, total int) {
		if bar == nil {
			bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(w), progressbar.OptionShowCount(),
				progressbar.OptionSetItsString("prompts"), progressbar.OptionThrottle(time.Second), progressbar.OptionSetDescription("eval"))
			return
		}
		_ = bar.Set(done)
		if done == total {
			_ = bar.Finish()
			fmt.Fprintln(w)
		}
	}
}
