package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// codebookConfig is the YAML form of the codebook command's settings; flags override it.
type codebookConfig struct {
	Grid    int    `yaml:"grid"`
	Cell    int    `yaml:"cell"`
	K       int    `yaml:"k"`
	Patch   int    `yaml:"patch"`
	Seed    uint64 `yaml:"seed"`
	Scenes  int    `yaml:"scenes"`
	Iters   int    `yaml:"iters"`
	HeldOut int    `yaml:"heldout"`
	Out     string `yaml:"out"`
}

// codebookSummary is what the command prints on stdout (one JSON object) after writing the file.
type codebookSummary struct {
	Out            string        `json:"out"`
	SHA256         string        `json:"sha256"`
	Grid           int           `json:"grid"`
	Cell           int           `json:"cell"`
	ImageSize      int           `json:"image_size"`
	Patch          int           `json:"patch"`
	K              int           `json:"k"`
	TokensPerImage int           `json:"tokens_per_image"`
	Train          vq.TrainStats `json:"train"`
	HeldOut        vq.EvalStats  `json:"heldout"`
}

func newCodebookCmd() *cobra.Command {
	def := scene.DefaultConfig()
	opt := vq.DefaultTrainOptions(1)
	c := codebookConfig{
		Grid: def.Grid, Cell: def.Cell, K: opt.K, Patch: opt.Patch, Seed: opt.Seed,
		Scenes: opt.Scenes, Iters: opt.Iters, HeldOut: 500, Out: "models/codebook.vq",
	}
	var configPath, logLevel string
	cmd := &cobra.Command{
		Use:   "codebook",
		Short: "Train the VQ image codebook by k-means over rendered scenes and write it",
		Long: "Train the VQ image codebook (k-means++ then Lloyd over the patches of random scenes that cover\n" +
			"every object) and write it in the checksummed codebook format. Prints a JSON summary with the\n" +
			"codebook size, tokens per image and the reconstruction error on held-out random scenes.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath != "" {
				if err := loadCodebookConfig(configPath, &c, cmd); err != nil {
					return err
				}
			}
			log, err := logging.New(logging.Options{Level: logLevel})
			if err != nil {
				return err
			}
			log = logging.Component(log, "codebook")
			if c.HeldOut < 1 {
				return fmt.Errorf("codebook: heldout %d < 1", c.HeldOut)
			}
			cfg := scene.Config{Grid: c.Grid, Cell: c.Cell}
			topt := vq.TrainOptions{K: c.K, Patch: c.Patch, Seed: c.Seed, Scenes: c.Scenes, Iters: c.Iters}
			cb, st, err := vq.Train(cfg, topt)
			if err != nil {
				return err
			}
			if st.K < st.RequestedK {
				log.Warn().Int("requested_k", st.RequestedK).Int("k", st.K).
					Msg("fewer distinct patches than requested codes: one code per distinct patch")
			}
			held, err := vq.HeldOutScenes(cfg, c.HeldOut, c.Seed)
			if err != nil {
				return err
			}
			ev, err := vq.Evaluate(cb, held)
			if err != nil {
				return err
			}
			if err := cb.Save(c.Out); err != nil {
				return err
			}
			log.Info().Str("out", c.Out).Int("k", cb.K()).Int("tokens_per_image", cb.TokensPerImage()).
				Float64("heldout_mse", ev.MSE).Msg("codebook written")
			sum := codebookSummary{
				Out: c.Out, SHA256: cb.SHA256(), Grid: cfg.Grid, Cell: cfg.Cell, ImageSize: cfg.ImageSize(),
				Patch: cb.Patch(), K: cb.K(), TokensPerImage: cb.TokensPerImage(), Train: st, HeldOut: ev,
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(sum)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML file with grid, cell, k, patch, seed, scenes, iters, heldout, out (flags override it)")
	f.StringVar(&logLevel, "log-level", "info", "log level")
	f.IntVar(&c.Grid, "grid", c.Grid, "grid cells per image side")
	f.IntVar(&c.Cell, "cell", c.Cell, "cell side in pixels")
	f.IntVar(&c.K, "k", c.K, "number of codes (capped at the number of distinct training patches)")
	f.IntVar(&c.Patch, "patch", c.Patch, "patch side in pixels; must divide the cell")
	f.Uint64Var(&c.Seed, "seed", c.Seed, "training seed")
	f.IntVar(&c.Scenes, "scenes", c.Scenes, "training scenes")
	f.IntVar(&c.Iters, "iters", c.Iters, "maximum Lloyd iterations")
	f.IntVar(&c.HeldOut, "heldout", c.HeldOut, "held-out scenes for the reconstruction error")
	f.StringVar(&c.Out, "out", c.Out, "codebook file to write")
	return cmd
}

// loadCodebookConfig reads YAML settings into c, then re-applies the flags the user set so that
// flags win.
func loadCodebookConfig(path string, c *codebookConfig, cmd *cobra.Command) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("codebook config %s: %w", path, err)
	}
	fromFile := *c
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&fromFile); err != nil {
		return fmt.Errorf("codebook config %s: %w", path, err)
	}
	flags := cmd.Flags()
	set := map[string]bool{}
	flags.Visit(func(fl *pflag.Flag) { set[fl.Name] = true })
	keep := *c
	*c = fromFile
	for name, apply := range map[string]func(){
		"grid": func() { c.Grid = keep.Grid }, "cell": func() { c.Cell = keep.Cell },
		"k": func() { c.K = keep.K }, "patch": func() { c.Patch = keep.Patch },
		"seed": func() { c.Seed = keep.Seed }, "scenes": func() { c.Scenes = keep.Scenes },
		"iters": func() { c.Iters = keep.Iters }, "heldout": func() { c.HeldOut = keep.HeldOut },
		"out": func() { c.Out = keep.Out },
	} {
		if set[name] {
			apply()
		}
	}
	return nil
}
