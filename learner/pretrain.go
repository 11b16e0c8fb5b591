package main

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/pretrain"
	"github.com/bicot-rl/bicot/pkg/startup"
)

func newPretrainCmd(p *startup.Process) *cobra.Command {
	c := pretrain.DefaultConfig()
	var cfgFile string
	cmd := &cobra.Command{
		Use:   "pretrain",
		Short: "Fit the base policy by supervised learning on (prompt, plan, image) triples",
		Long: "Fit the base policy on the training prompts: for every example a scene is drawn for the prompt\n" +
			"(never a held-out combination), its canonical plan written and its image rendered and VQ-encoded;\n" +
			"the policy learns plan words and image codes by teacher forcing. Some examples drop the plan and\n" +
			"some the whole condition, so --no-plan sampling and classifier-free guidance work. Writes the\n" +
			"checkpoint (safetensors) and its model config (JSON next to it) and prints a JSON summary.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgFile != "" {
				if err := readUnderFlags(cmd, func() error { return pretrain.ReadConfig(cfgFile, &c) }); err != nil {
					return err
				}
			}
			log := p.Log()
			if err := c.Validate(); err != nil {
				return err // before the backend, which announces itself
			}
			backend, err := mlx.NewBackend(c.Backend)
			if err != nil {
				return fmt.Errorf("pretrain: %w", err)
			}
			sum, err := pretrain.Run(cmd.Context(), backend, c, pretrainBar(cmd.ErrOrStderr()), logging.Component(log, "pretrain"))
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), sum)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "YAML file with the settings below (flags override it)")
	f.Uint64Var(&c.Seed, "seed", c.Seed, "seed of the weights and of the example stream")
	f.IntVar(&c.Steps, "steps", c.Steps, "training steps")
	f.IntVar(&c.Batch, "batch", c.Batch, "examples per step")
	f.Float64Var(&c.LR, "lr", c.LR, "peak learning rate (warm-up then cosine decay)")
	f.IntVar(&c.DModel, "d-model", c.DModel, "model width")
	f.IntVar(&c.Layers, "layers", c.Layers, "transformer layers")
	f.StringVar(&c.Prompts, "prompts", c.Prompts, "training prompt file (JSONL)")
	f.StringVar(&c.Codebook, "codebook", c.Codebook, "VQ codebook file")
	f.StringVar(&c.Out, "out", c.Out, "checkpoint to write (.safetensors)")
	f.StringVar(&c.Backend, "backend", c.Backend, "gomlx backend (default go:parallelism=-1; xla:cuda with -tags xla)")
	f.IntVar(&c.Shards, "shards", c.Shards, "gradient shards computed concurrently per step (0: one per CPU core on the pure-Go backend, 1 on XLA)")
	f.IntVar(&c.SaveEvery, "save-every", c.SaveEvery, "also write <out>-step<N>.safetensors every N steps (0: only at the end)")
	return cmd
}

// pretrainBar shows the steps and the smoothed loss on w, ending its line after the last step so
// that the log lines of the written checkpoint start on their own.
func pretrainBar(w io.Writer) func(pretrain.Progress) {
	var bar *progressbar.ProgressBar
	return func(p pretrain.Progress) {
		if p.Step == 0 {
			bar = progressbar.NewOptions(p.Steps, progressbar.OptionSetWriter(w), progressbar.OptionShowCount(),
				progressbar.OptionSetItsString("steps"), progressbar.OptionShowIts(), progressbar.OptionThrottle(time.Second),
				progressbar.OptionSetPredictTime(true), progressbar.OptionSetDescription("pretrain"))
			return
		}
		bar.Describe(fmt.Sprintf("loss %.3f (text %.3f image %.3f)", p.LossEMA, p.Stats.TextNLL, p.Stats.ImageNLL))
		_ = bar.Add(1)
		if p.Step == p.Steps {
			_ = bar.Finish()
			fmt.Fprintln(w)
		}
	}
}
