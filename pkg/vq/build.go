package vq

import (
	"bytes"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// BuildConfig is the settings of a codebook build (`learner codebook`), in its YAML form: the
// canvas, the training options, the held-out scenes measured and the file written.
type BuildConfig struct {
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

// DefaultBuildConfig builds the shipped codebook (models/codebook.vq) from seed 1.
func DefaultBuildConfig() BuildConfig {
	def := scene.DefaultConfig()
	opt := DefaultTrainOptions(1)
	return BuildConfig{
		Grid: def.Grid, Cell: def.Cell, K: opt.K, Patch: opt.Patch, Seed: opt.Seed,
		Scenes: opt.Scenes, Iters: opt.Iters, HeldOut: 500, Out: "models/codebook.vq",
	}
}

// ReadBuildConfig decodes the YAML file at path over c: keys the file leaves out keep c's values,
// and unknown keys are errors (a typo must not silently keep a default).
func ReadBuildConfig(path string, c *BuildConfig) error {
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
	*c = fromFile
	return nil
}

// BuildSummary describes a written codebook (`learner codebook` prints it as JSON).
type BuildSummary struct {
	Out            string     `json:"out"`
	SHA256         string     `json:"sha256"`
	Grid           int        `json:"grid"`
	Cell           int        `json:"cell"`
	ImageSize      int        `json:"image_size"`
	Patch          int        `json:"patch"`
	K              int        `json:"k"`
	TokensPerImage int        `json:"tokens_per_image"`
	Train          TrainStats `json:"train"`
	HeldOut        EvalStats  `json:"heldout"`
}

// Build trains a codebook with c, measures its reconstruction on c.HeldOut random scenes no
// training draw shares, and writes it to c.Out. Train.K < Train.RequestedK in the summary means
// there were fewer distinct patches than codes asked for.
func Build(c BuildConfig) (BuildSummary, error) {
	if c.HeldOut < 1 {
		return BuildSummary{}, fmt.Errorf("codebook: heldout %d < 1", c.HeldOut)
	}
	cfg := scene.Config{Grid: c.Grid, Cell: c.Cell}
	cb, st, err := Train(cfg, TrainOptions{K: c.K, Patch: c.Patch, Seed: c.Seed, Scenes: c.Scenes, Iters: c.Iters})
	if err != nil {
		return BuildSummary{}, err
	}
	held, err := HeldOutScenes(cfg, c.HeldOut, c.Seed)
	if err != nil {
		return BuildSummary{}, err
	}
	ev, err := Evaluate(cb, held)
	if err != nil {
		return BuildSummary{}, err
	}
	if err := cb.Save(c.Out); err != nil {
		return BuildSummary{}, err
	}
	return BuildSummary{
		Out: c.Out, SHA256: cb.SHA256(), Grid: cfg.Grid, Cell: cfg.Cell, ImageSize: cfg.ImageSize(),
		Patch: cb.Patch(), K: cb.K(), TokensPerImage: cb.TokensPerImage(), Train: st, HeldOut: ev,
	}, nil
}
