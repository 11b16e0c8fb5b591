package pretrain

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/bicot-rl/bicot/pkg/model"
)

// Config is the pretraining settings, in the YAML form of configs/pretrain.yaml.
type Config struct {
	DModel  int `yaml:"d_model"`
	Heads   int `yaml:"heads"`
	Layers  int `yaml:"layers"`
	FF      int `yaml:"ff"`
	TextLen int `yaml:"text_len"`

	Steps       int     `yaml:"steps"`
	Batch       int     `yaml:"batch"`
	LR          float64 `yaml:"lr"`
	Warmup      int     `yaml:"warmup"`
	MinLRFrac   float64 `yaml:"min_lr_frac"`
	WeightDecay float64 `yaml:"weight_decay"`
	// NoPlanFrac of the examples drop the plan (so --no-plan sampling is in distribution);
	// UncondFrac replace prompt and plan by the unconditional context (CFG's other branch).
	NoPlanFrac float64 `yaml:"no_plan_frac"`
	UncondFrac float64 `yaml:"uncond_frac"`
	Seed       uint64  `yaml:"seed"`
	// TieCells ties each image position to its cell's plan word (model.Config.CellTokens).
	TieCells bool `yaml:"tie_cells"`
	// Sinusoidal adds fixed sinusoidal position codes (model.Config.SinusoidalPositions).
	Sinusoidal bool `yaml:"sinusoidal_positions"`
	// TiedTextHead ties the text head to the word embeddings (model.Config.TiedTextHead).
	TiedTextHead bool `yaml:"tied_text_head"`
	// PhraseBag adds each phrase's running mean embedding (model.Config.PhraseBag); the comma
	// separates plan phrases.
	PhraseBag bool `yaml:"phrase_bag"`
	// CellBag gives each image position the bag of the plan phrase naming its cell
	// (model.Config.CellBag); it needs TieCells.
	CellBag bool `yaml:"cell_bag"`
	// PlanOrder is the object order of the training plans: "prompt" (as the prompt names them,
	// plan.Ordered) or "raster" (by cell, plan.Canonical).
	PlanOrder string `yaml:"plan_order"`
	// CodeWords names each image code's object in words (model.Config.CodeWords); it needs
	// patch == cell, so that one code shows one whole object.
	CodeWords bool `yaml:"code_words"`
	// TypeRepeats puts the prompts of these task types this many times into the example pool
	// (Mix.TypeRepeats).
	TypeRepeats map[string]int `yaml:"type_repeats"`

	Prompts  string `yaml:"prompts"`
	Codebook string `yaml:"codebook"`
	Out      string `yaml:"out"`
	Backend  string `yaml:"backend"`
	// Shards splits each batch into concurrently computed gradient shards (TrainerOptions);
	// 0 means one per CPU core on the pure-Go backend and 1 on XLA.
	Shards int `yaml:"shards"`
	// SaveEvery > 0 also writes <out>-step<N>.safetensors every N steps (for choosing steps).
	SaveEvery int `yaml:"save_every"`
}

// DefaultConfig is the shipped base policy's settings (configs/pretrain.yaml lists them).
func DefaultConfig() Config {
	d := model.DefaultConfig()
	mix := DefaultMix() // the supervised anchor draws the same mix
	return Config{
		DModel: d.DModel, Heads: d.Heads, Layers: d.Layers, FF: d.FF, TextLen: d.TextLen,
		Steps: 1600, Batch: mix.Batch, LR: 1e-2, Warmup: 50, MinLRFrac: 0.05, WeightDecay: 0,
		NoPlanFrac: mix.NoPlanFrac, UncondFrac: mix.UncondFrac, TieCells: true, Sinusoidal: d.SinusoidalPositions,
		TiedTextHead: d.TiedTextHead, PhraseBag: d.PhraseBag, CellBag: true, CodeWords: false,
		PlanOrder: mix.PlanOrder, Seed: mix.Seed, TypeRepeats: mix.TypeRepeats,
		Prompts: "data/prompts/train.jsonl", Codebook: "models/codebook.vq", Out: "models/base.safetensors",
	}
}

// ReadConfig decodes the YAML file at path over c: keys the file leaves out keep c's values, and
// unknown keys are errors (a typo must not silently keep a default).
func ReadConfig(path string, c *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("pretrain config %s: %w", path, err)
	}
	fromFile := *c
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&fromFile); err != nil {
		return fmt.Errorf("pretrain config %s: %w", path, err)
	}
	*c = fromFile
	return nil
}

// Validate names the first bad setting.
func (c Config) Validate() error {
	if err := c.Mix().Validate(); err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	switch {
	case c.Steps < 1:
		return fmt.Errorf("pretrain: steps %d < 1", c.Steps)
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("pretrain: lr %v must be > 0", c.LR)
	case c.Warmup < 0:
		return fmt.Errorf("pretrain: warmup %d < 0", c.Warmup)
	case !(c.MinLRFrac >= 0 && c.MinLRFrac <= 1):
		return fmt.Errorf("pretrain: min_lr_frac %v outside [0,1]", c.MinLRFrac)
	case c.CellBag && !c.TieCells:
		return fmt.Errorf("pretrain: cell_bag needs tie_cells")
	case c.Shards < 0:
		return fmt.Errorf("pretrain: shards %d < 0", c.Shards)
	case c.Out == "" || !strings.HasSuffix(c.Out, ".safetensors"):
		return fmt.Errorf("pretrain: out %q must end in .safetensors", c.Out)
	}
	return nil
}

// Mix is the example mix of the settings.
func (c Config) Mix() Mix {
	return Mix{Batch: c.Batch, NoPlanFrac: c.NoPlanFrac, UncondFrac: c.UncondFrac, PlanOrder: c.PlanOrder, Seed: c.Seed,
		TypeRepeats: c.TypeRepeats}
}

// ConfigPath is where Run writes the JSON model config of a checkpoint: next to it, so that the
// pair travels together.
func ConfigPath(checkpoint string) string {
	return strings.TrimSuffix(checkpoint, ".safetensors") + ".json"
}

// stepPath is the intermediate checkpoint written after step (Config.SaveEvery).
func stepPath(out string, step int) string {
	return fmt.Sprintf("%s-step%d.safetensors", strings.TrimSuffix(out, ".safetensors"), step)
}
