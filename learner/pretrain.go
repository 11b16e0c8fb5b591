package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/pretrain"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// pretrainConfig is the YAML form of the pretrain command's settings; flags override it.
type pretrainConfig struct {
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

	Prompts  string `yaml:"prompts"`
	Codebook string `yaml:"codebook"`
	Out      string `yaml:"out"`
	Backend  string `yaml:"backend"`
	// Shards splits each batch into concurrently computed gradient shards (model.TrainerOptions);
	// 0 means one per CPU core on the pure-Go backend and 1 on XLA.
	Shards int `yaml:"shards"`
	// SaveEvery > 0 also writes <out>-step<N>.safetensors every N steps (for choosing steps).
	SaveEvery int `yaml:"save_every"`
}

func defaultPretrainConfig() pretrainConfig {
	d := model.DefaultConfig()
	mix := pretrain.DefaultMix() // the supervised anchor draws the same mix
	return pretrainConfig{
		DModel: d.DModel, Heads: d.Heads, Layers: d.Layers, FF: d.FF, TextLen: d.TextLen,
		Steps: 1600, Batch: mix.Batch, LR: 1e-2, Warmup: 50, MinLRFrac: 0.05, WeightDecay: 0,
		NoPlanFrac: mix.NoPlanFrac, UncondFrac: mix.UncondFrac, TieCells: true, Sinusoidal: d.SinusoidalPositions, TiedTextHead: d.TiedTextHead, PhraseBag: d.PhraseBag,
		CellBag: true, CodeWords: false, PlanOrder: mix.PlanOrder, Seed: mix.Seed,
		Prompts: "data/prompts/train.jsonl", Codebook: "models/codebook.vq", Out: "models/base.safetensors",
	}
}

func (c pretrainConfig) validate() error {
	if err := c.mix().Validate(); err != nil {
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

// configPath is where the JSON model config is written next to a checkpoint.
func configPath(checkpoint string) string {
	return strings.TrimSuffix(checkpoint, ".safetensors") + ".json"
}

// policyConfig joins the model sizes with the tokenizer's and codebook's vocabularies.
func policyConfig(c pretrainConfig, vocab *tokenizer.Vocab, cb *vq.Codebook) (model.Config, error) {
	mc := model.Config{
		TextVocab: vocab.Size(), ImageVocab: cb.K(), TextLen: c.TextLen, ImageTokens: cb.TokensPerImage(),
		DModel: c.DModel, Heads: c.Heads, Layers: c.Layers, FF: c.FF, SinusoidalPositions: c.Sinusoidal,
		TiedTextHead: c.TiedTextHead,
		Special: model.Specials{
			Pad: tokenizer.Pad, BOS: tokenizer.BOS, EOS: tokenizer.EOS, Plan: tokenizer.Plan,
			ImgStart: tokenizer.ImgStart, Uncond: tokenizer.Uncond,
		},
	}
	if c.PhraseBag || c.CellBag {
		comma, ok := vocab.ID(",")
		if !ok {
			return mc, fmt.Errorf("phrase bag: the vocabulary has no comma")
		}
		mc.PhraseBag, mc.CellBag, mc.PhraseSeparators = c.PhraseBag, c.CellBag, []int32{int32(comma)}
	}
	if c.CodeWords {
		words, err := codeWords(vocab, cb)
		if err != nil {
			return mc, err
		}
		mc.CodeWords = words
	}
	if c.TieCells {
		// Image code i is patch (r, c) in raster order; it lies in the cell the plan names.
		sc := cb.Config()
		n := cb.PatchesPerSide()
		for i := 0; i < cb.TokensPerImage(); i++ {
			row, col := (i/n)*cb.Patch()/sc.Cell, (i%n)*cb.Patch()/sc.Cell
			name := plan.CellName(row, col)
			id, ok := vocab.ID(name)
			if !ok {
				return mc, fmt.Errorf("tie cells: cell name %q is not in the vocabulary", name)
			}
			mc.CellTokens = append(mc.CellTokens, int32(id))
		}
	}
	return mc, mc.Validate()
}

// codeWords renders every object alone and reads which code it gets: that code shows those
// words (size, colour, texture, shape). Codes no object gets (the background) have none.
func codeWords(vocab *tokenizer.Vocab, cb *vq.Codebook) ([][]int32, error) {
	sc := cb.Config()
	if cb.Patch() != sc.Cell {
		return nil, fmt.Errorf("code words: patch %d differs from cell %d, so a code is not one object", cb.Patch(), sc.Cell)
	}
	out := make([][]int32, cb.K())
	for _, o := range vq.AllObjects() {
		img, err := scene.Render(sc, scene.Scene{Objects: []scene.Object{o}})
		if err != nil {
			return nil, fmt.Errorf("code words: %w", err)
		}
		codes, err := cb.Encode(img)
		if err != nil {
			return nil, fmt.Errorf("code words: %w", err)
		}
		code := codes[0]
		if out[code] != nil {
			continue // two objects share a code: keep the first reading
		}
		for _, w := range []string{string(o.Size), string(o.Colour), string(o.Texture), string(o.Shape)} {
			id, ok := vocab.ID(w)
			if !ok {
				return nil, fmt.Errorf("code words: %q is not in the vocabulary", w)
			}
			out[code] = append(out[code], int32(id))
		}
	}
	return out, nil
}

// mix is the example mix of the pretrain settings.
func (c pretrainConfig) mix() pretrain.Mix {
	return pretrain.Mix{Batch: c.Batch, NoPlanFrac: c.NoPlanFrac, UncondFrac: c.UncondFrac, PlanOrder: c.PlanOrder, Seed: c.Seed}
}

// pretrainSummary is printed on stdout (JSON) when the checkpoint is written.
type pretrainSummary struct {
	Out        string       `json:"out"`
	Config     model.Config `json:"config"`
	Params     int          `json:"params"`
	Steps      int          `json:"steps"`
	Seed       uint64       `json:"seed"`
	Seconds    float64      `json:"seconds"`
	FinalLoss  float64      `json:"final_loss"`
	FinalText  float64      `json:"final_text_nll"`
	FinalImage float64      `json:"final_image_nll"`
}

func newPretrainCmd() *cobra.Command {
	c := defaultPretrainConfig()
	var cfgFile, logLevel string
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
				if err := loadPretrainConfig(cfgFile, &c, cmd); err != nil {
					return err
				}
			}
			log, err := logging.New(logging.Options{Level: logLevel})
			if err != nil {
				return err
			}
			return runPretrain(cmd, c, logging.Component(log, "pretrain"))
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "YAML file with the settings below (flags override it)")
	f.StringVar(&logLevel, "log-level", "info", "log level")
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

func loadPretrainConfig(path string, c *pretrainConfig, cmd *cobra.Command) error {
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
	keep := *c
	*c = fromFile
	cmd.Flags().Visit(func(fl *pflag.Flag) {
		switch fl.Name {
		case "seed":
			c.Seed = keep.Seed
		case "steps":
			c.Steps = keep.Steps
		case "batch":
			c.Batch = keep.Batch
		case "lr":
			c.LR = keep.LR
		case "d-model":
			c.DModel = keep.DModel
		case "layers":
			c.Layers = keep.Layers
		case "prompts":
			c.Prompts = keep.Prompts
		case "codebook":
			c.Codebook = keep.Codebook
		case "out":
			c.Out = keep.Out
		case "backend":
			c.Backend = keep.Backend
		case "save-every":
			c.SaveEvery = keep.SaveEvery
		case "shards":
			c.Shards = keep.Shards
		}
	})
	return nil
}

func runPretrain(cmd *cobra.Command, c pretrainConfig, log zerolog.Logger) error {
	if err := c.validate(); err != nil {
		return err
	}
	vocab := tokenizer.New()
	cb, err := vq.Load(c.Codebook)
	if err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	ps, err := prompts.ReadFile(c.Prompts)
	if err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	mcfg, err := policyConfig(c, vocab, cb)
	if err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	maker, err := pretrain.NewExamples(c.mix(), mcfg, vocab, cb, ps)
	if err != nil {
		return fmt.Errorf("pretrain: %s: %w", c.Prompts, err)
	}
	backend, err := mlx.NewBackend(c.Backend)
	if err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	m, err := model.New(backend, mcfg, c.Seed)
	if err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	shards := c.Shards
	if shards == 0 {
		shards = 1
		if mlx.IsGoBackend(backend) {
			shards = runtime.GOMAXPROCS(0)
		}
	}
	tr, err := m.NewTrainerWith(model.TrainerOptions{LearningRate: c.LR, WeightDecay: c.WeightDecay, Shards: shards})
	if err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	log.Info().Int("params", m.NumParameters()).Int("prompts", maker.Prompts()).Int("steps", c.Steps).
		Int("batch", c.Batch).Int("shards", shards).Int("seq_len", mcfg.SeqLen()).Msg("pretraining")

	// Examples are made one step ahead, beside the training step.
	type prepared struct {
		b   model.Batch
		err error
	}
	batches := make(chan prepared, 2)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(batches)
		for s := 0; s < c.Steps; s++ {
			b, err := maker.Batch(s)
			select {
			case batches <- prepared{b, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	bar := progressbar.NewOptions(c.Steps, progressbar.OptionSetWriter(cmd.ErrOrStderr()), progressbar.OptionShowCount(),
		progressbar.OptionSetItsString("steps"), progressbar.OptionShowIts(), progressbar.OptionThrottle(time.Second),
		progressbar.OptionSetPredictTime(true), progressbar.OptionSetDescription("pretrain"))
	start := time.Now()
	var st model.StepStats
	var ema float64
	for s := 0; s < c.Steps; s++ {
		pb, ok := <-batches
		if !ok {
			return fmt.Errorf("pretrain: example stream ended at step %d", s)
		}
		if pb.err != nil {
			return fmt.Errorf("pretrain: %w", pb.err)
		}
		if err := tr.SetLearningRate(model.CosineLR(s, c.Steps, c.Warmup, c.LR, c.MinLRFrac)); err != nil {
			return err
		}
		st, err = tr.Step(pb.b)
		if err != nil {
			return fmt.Errorf("pretrain: step %d: %w", s, err)
		}
		if s == 0 {
			ema = st.Loss
		}
		ema = 0.95*ema + 0.05*st.Loss
		bar.Describe(fmt.Sprintf("loss %.3f (text %.3f image %.3f)", ema, st.TextNLL, st.ImageNLL))
		_ = bar.Add(1)
		if (s+1)%50 == 0 || s == c.Steps-1 {
			log.Info().Int("step", s+1).Float64("loss", st.Loss).Float64("loss_ema", ema).Float64("text_nll", st.TextNLL).
				Float64("image_nll", st.ImageNLL).Float64("lr", st.LearningRate).Float64("elapsed_s", time.Since(start).Seconds()).Msg("progress")
		}
		if c.SaveEvery > 0 && (s+1)%c.SaveEvery == 0 && s+1 < c.Steps {
			p := fmt.Sprintf("%s-step%d.safetensors", strings.TrimSuffix(c.Out, ".safetensors"), s+1)
			if err := m.SaveFile(p, model.SaveOptions{}); err != nil {
				return fmt.Errorf("pretrain: %w", err)
			}
			if err := model.SaveConfig(configPath(p), mcfg); err != nil {
				return fmt.Errorf("pretrain: %w", err)
			}
		}
	}
	_ = bar.Finish()
	fmt.Fprintln(cmd.ErrOrStderr())
	if err := m.SaveFile(c.Out, model.SaveOptions{}); err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	if err := model.SaveConfig(configPath(c.Out), mcfg); err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	sum := pretrainSummary{Out: c.Out, Config: mcfg, Params: m.NumParameters(), Steps: c.Steps, Seed: c.Seed,
		Seconds: time.Since(start).Seconds(), FinalLoss: st.Loss, FinalText: st.TextNLL, FinalImage: st.ImageNLL}
	log.Info().Str("out", c.Out).Float64("seconds", sum.Seconds).Msg("checkpoint written")
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(sum)
}
