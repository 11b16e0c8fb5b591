// Package model is the policy: a decoder-only transformer over one vocabulary of text words,
// image codes and special tokens (the Janus layout in miniature), with
//
//   - two-level sampling (a semantic plan, then image tokens) with a fixed-shape KV cache,
//     temperature, classifier-free guidance on image tokens and per-sample random streams;
//   - teacher-forced scoring of plan and image tokens, as executables and as graph functions the
//     RL learner differentiates (LogProbsGraph);
//   - the supervised (teacher-forced) loss, SupervisedLossGraph, and self-describing safetensors
//     checkpoints.
//
// The supervised trainer that steps that loss with Adam (pretraining) is pretrain.Trainer: the
// rollout and reward workers link this package to sample and score, and keeping the trainer out
// of it keeps it out of them.
//
// Sequence layout (fixed shapes, so nothing recompiles per prompt or per token):
//
//	position: 0     1..p        p+1    p+2..        e     ..L-1   L          L+1..L+I
//	token:    [bos] prompt ids  [plan] plan words   [eos] [pad].. [img_start] image codes
//
// L = Config.TextLen and I = Config.ImageTokens. Text ids are [0, TextVocab); image code c is
// token TextVocab+c. The text head predicts positions 1..L-1, the image head positions
// L+1..L+I; img_start is always given. The unconditional context used by guidance replaces the
// whole text part by [bos] [uncond] [pad]...
//
// All graph code goes through pkg/mlx for the gomlx v0.26 workarounds.
package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
)

// Specials are the ids of the special tokens the layout needs (from pkg/tokenizer).
type Specials struct {
	Pad      int32 `json:"pad"`
	BOS      int32 `json:"bos"`
	EOS      int32 `json:"eos"`
	Plan     int32 `json:"plan"`
	ImgStart int32 `json:"img_start"`
	Uncond   int32 `json:"uncond"`
}

// Config sizes the policy and fixes its sequence layout.
type Config struct {
	TextVocab   int      `json:"text_vocab" yaml:"text_vocab"`     // text ids incl. specials
	ImageVocab  int      `json:"image_vocab" yaml:"image_vocab"`   // VQ codebook size K
	TextLen     int      `json:"text_len" yaml:"text_len"`         // L: bos + prompt + plan + eos + pads
	ImageTokens int      `json:"image_tokens" yaml:"image_tokens"` // I: image codes per sample
	DModel      int      `json:"d_model" yaml:"d_model"`
	Heads       int      `json:"heads" yaml:"heads"`
	Layers      int      `json:"layers" yaml:"layers"`
	FF          int      `json:"ff" yaml:"ff"` // feed-forward hidden width
	Special     Specials `json:"special" yaml:"special"`
	// CellTokens optionally ties image positions to text words: CellTokens[i] is the text id that
	// names the place of image code i (in the scene world the plan's cell name, e.g. "b3"), and its
	// word embedding is added to the input of the position that predicts code i. A plan then says
	// where each object goes in the same vectors the image positions carry, so the binding "this
	// phrase -> that image token" is a direct match instead of one learned between unrelated word
	// and position embeddings (it is what makes the small base learn plan-following images in
	// minutes). Empty: no tying.
	CellTokens []int32 `json:"cell_tokens,omitempty" yaml:"cell_tokens,omitempty"`
	// SinusoidalPositions adds fixed sinusoidal position codes (amplitude SinusoidAmplitude) under
	// the learned position embedding, which then starts at zero. Sinusoids make "the k tokens
	// before this one" a linear function of the position, which the plan needs (a phrase's
	// attributes precede its cell word) and random learned positions only find slowly.
	SinusoidalPositions bool `json:"sinusoidal_positions,omitempty" yaml:"sinusoidal_positions,omitempty"`
	// TiedTextHead computes the text logits against the input embeddings of the text words (plus
	// a bias) instead of a separate output matrix, so copying a prompt word into the plan is a
	// direct match (weight tying, as in GPT-2).
	TiedTextHead bool `json:"tied_text_head,omitempty" yaml:"tied_text_head,omitempty"`
	// PhraseBag adds to each position's input the mean embedding of the tokens of its phrase so
	// far (since the last separator: bos, plan, eos, img_start, uncond and PhraseSeparators such as
	// the comma). At a plan's cell word that mean holds the whole object (size, colour, texture,
	// shape, cell), so an image position finds its object in one attention hop instead of two
	// (find the cell word, then the words before it). It is a function of the prefix, so sampling
	// stays causal.
	PhraseBag        bool    `json:"phrase_bag,omitempty" yaml:"phrase_bag,omitempty"`
	PhraseSeparators []int32 `json:"phrase_separators,omitempty" yaml:"phrase_separators,omitempty"`
	// CellBag (needs CellTokens and PhraseSeparators) adds to the input of the position that
	// predicts image code i the phrase bag of the plan phrase ending in CellTokens[i] (its mean
	// embedding; the mean of them if the text names the cell twice), or the embedding of the
	// plan's eos if no phrase names it. The position then holds "what the plan puts here"
	// without an attention hop, and drawing a plan becomes a per-position reading of that vector,
	// which the base policy learns in a few hundred steps instead of thousands. The image is
	// still sampled token by token; what the position holds is a function of the text prefix.
	CellBag bool `json:"cell_bag,omitempty" yaml:"cell_bag,omitempty"`
	// CodeWords optionally names what each image code shows in text words (in the scene world
	// the object's size, colour, texture and shape; nil for the background). The image head then
	// adds h . sum(word vectors of its words) to each code's logit (the word vectors are the
	// head's own), so drawing what a plan phrase says means learning a few attribute vectors
	// instead of 240 word-to-code associations one by one.
	CodeWords [][]int32 `json:"code_words,omitempty" yaml:"code_words,omitempty"`
}

// separators are the ids that open a new phrase.
func (c Config) separators() []int32 {
	s := c.Special
	return append([]int32{s.BOS, s.Plan, s.EOS, s.ImgStart, s.Uncond}, c.PhraseSeparators...)
}

// usesBags reports whether positions read mean embeddings of other positions (phrase or cell bags).
func (c Config) usesBags() bool { return c.PhraseBag || c.CellBag }

// bagWeights fills w (len SeqLen) with the weights of the bag the input at pos adds: the phrase
// bag (PhraseBag) plus the cell bag (CellBag) over the tokens of seq, which must be known up to
// pos. It is the host-side twin of Model.bagWeightsGraph, used one position at a time by the
// KV-cache sampler.
func (c Config) bagWeights(seq []int32, pos int, w []float32) {
	clear(w)
	if c.PhraseBag {
		c.addPhraseWeights(seq, pos, 1, w)
	}
	if !c.CellBag || pos < c.TextLen || pos >= c.TextLen+len(c.CellTokens) {
		return
	}
	cell := c.CellTokens[pos-c.TextLen]
	var at []int
	eos := -1
	for s := 0; s < c.TextLen; s++ {
		switch seq[s] {
		case cell:
			at = append(at, s)
		case c.Special.EOS:
			if eos < 0 {
				eos = s
			}
		}
	}
	if len(at) == 0 {
		if eos >= 0 {
			w[eos]++
		}
		return
	}
	for _, s := range at {
		c.addPhraseWeights(seq, s, float32(len(at)), w)
	}
}

// addPhraseWeights adds 1/n/div to w[s] for the n positions s <= pos in pos's phrase of seq
// (computed in the order the graph computes it, so both give the same floats).
func (c Config) addPhraseWeights(seq []int32, pos int, div float32, w []float32) {
	seps := c.separators()
	start := 0
	for s := 0; s <= pos; s++ {
		if slices.Contains(seps, seq[s]) {
			start = s
		}
	}
	n := pos - start + 1
	for s := start; s <= pos; s++ {
		w[s] += 1 / float32(n) / div
	}
}

// SinusoidAmplitude scales the fixed position codes to the size of the initial embeddings.
const SinusoidAmplitude = 0.1

// Equal reports whether two configs are the same.
func (c Config) Equal(o Config) bool {
	return c.TextVocab == o.TextVocab && c.ImageVocab == o.ImageVocab && c.TextLen == o.TextLen &&
		c.ImageTokens == o.ImageTokens && c.DModel == o.DModel && c.Heads == o.Heads && c.Layers == o.Layers &&
		c.FF == o.FF && c.Special == o.Special && slices.Equal(c.CellTokens, o.CellTokens) &&
		c.SinusoidalPositions == o.SinusoidalPositions && c.TiedTextHead == o.TiedTextHead &&
		c.PhraseBag == o.PhraseBag && slices.Equal(c.PhraseSeparators, o.PhraseSeparators) && c.CellBag == o.CellBag &&
		slices.EqualFunc(c.CodeWords, o.CodeWords, slices.Equal[[]int32])
}

// DefaultConfig is sized for 2 CPU cores (d_model 64 / 3 layers); vocabulary sizes and
// special ids must be filled in from the tokenizer and the codebook. TextLen 36 holds the longest
// prompt plus plan of the scene world's default grid (32 words) and the three specials.
func DefaultConfig() Config {
	return Config{TextLen: 36, ImageTokens: 16, DModel: 64, Heads: 4, Layers: 3, FF: 256, SinusoidalPositions: true}
}

// SeqLen is the full sequence length L + 1 + I.
func (c Config) SeqLen() int { return c.TextLen + 1 + c.ImageTokens }

// Vocab is the size of the shared embedding table (text + image).
func (c Config) Vocab() int { return c.TextVocab + c.ImageVocab }

// HeadDim is the per-head width.
func (c Config) HeadDim() int { return c.DModel / c.Heads }

// minParams is a lower bound of the parameters a model of this config has (embeddings, attention
// and feed-forward weights), in float64 so that no claimed size overflows.
func (c Config) minParams() float64 {
	d, ff := float64(c.DModel), float64(c.FF)
	return float64(c.TextVocab+c.ImageVocab)*d + float64(c.Layers)*(4*d*d+2*d*ff)
}

// Validate reports every problem of the configuration.
func (c Config) Validate() error {
	var errs []error
	pos := func(name string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be > 0, got %d", name, v))
		}
	}
	pos("text_vocab", c.TextVocab)
	pos("image_vocab", c.ImageVocab)
	pos("image_tokens", c.ImageTokens)
	pos("d_model", c.DModel)
	pos("heads", c.Heads)
	pos("layers", c.Layers)
	pos("ff", c.FF)
	if c.TextLen < 5 {
		errs = append(errs, fmt.Errorf("text_len must be >= 5 (bos, prompt, plan, eos), got %d", c.TextLen))
	}
	if c.Heads > 0 && c.DModel%c.Heads != 0 {
		errs = append(errs, fmt.Errorf("d_model %d not divisible by heads %d", c.DModel, c.Heads))
	}
	s := c.Special
	ids := map[string]int32{"pad": s.Pad, "bos": s.BOS, "eos": s.EOS, "plan": s.Plan, "img_start": s.ImgStart, "uncond": s.Uncond}
	seen := map[int32]string{}
	for _, name := range []string{"pad", "bos", "eos", "plan", "img_start", "uncond"} {
		id := ids[name]
		if id < 0 || int(id) >= c.TextVocab {
			errs = append(errs, fmt.Errorf("special %s id %d outside text vocab [0,%d)", name, id, c.TextVocab))
		}
		if other, dup := seen[id]; dup {
			errs = append(errs, fmt.Errorf("specials %s and %s share id %d", other, name, id))
		}
		seen[id] = name
	}
	if len(c.CellTokens) != 0 && len(c.CellTokens) != c.ImageTokens {
		errs = append(errs, fmt.Errorf("cell_tokens has %d ids, want 0 or image_tokens (%d)", len(c.CellTokens), c.ImageTokens))
	}
	for i, id := range c.CellTokens {
		if id < 0 || int(id) >= c.TextVocab {
			errs = append(errs, fmt.Errorf("cell_tokens[%d] = %d outside text vocab [0,%d)", i, id, c.TextVocab))
		}
	}
	if len(c.CodeWords) != 0 && len(c.CodeWords) != c.ImageVocab {
		errs = append(errs, fmt.Errorf("code_words has %d entries, want 0 or image_vocab (%d)", len(c.CodeWords), c.ImageVocab))
	}
	for i, ws := range c.CodeWords {
		for _, id := range ws {
			if id < 0 || int(id) >= c.TextVocab {
				errs = append(errs, fmt.Errorf("code_words[%d] has id %d outside text vocab [0,%d)", i, id, c.TextVocab))
			}
		}
	}
	if c.CellBag && (len(c.CellTokens) == 0 || len(c.PhraseSeparators) == 0) {
		errs = append(errs, fmt.Errorf("cell_bag needs cell_tokens and phrase_separators"))
	}
	for i, id := range c.PhraseSeparators {
		if id < 0 || int(id) >= c.TextVocab {
			errs = append(errs, fmt.Errorf("phrase_separators[%d] = %d outside text vocab [0,%d)", i, id, c.TextVocab))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("model config: %w", err)
	}
	return nil
}

// LoadConfig reads a JSON config file (the format SaveConfig writes).
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read model config: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("parse model config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("model config %s: %w", path, err)
	}
	return c, nil
}

// SaveConfig writes the config as indented JSON.
func SaveConfig(path string, c Config) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write model config: %w", err)
	}
	return nil
}
