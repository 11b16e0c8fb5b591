package model

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/gomlx/gomlx/backends"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// ForVocabularies returns sizes with the text vocabulary, the special tokens and the image
// vocabulary filled in from the tokenizer and the codebook: what every policy of this domain
// shares, whatever its width.
func ForVocabularies(sizes Config, vocab *tokenizer.Vocab, cb *vq.Codebook) Config {
	c := sizes
	c.TextVocab, c.ImageVocab, c.ImageTokens = vocab.Size(), cb.K(), cb.TokensPerImage()
	c.Special = Specials{Pad: tokenizer.Pad, BOS: tokenizer.BOS, EOS: tokenizer.EOS, Plan: tokenizer.Plan,
		ImgStart: tokenizer.ImgStart, Uncond: tokenizer.Uncond}
	return c
}

// InitCheckpoint returns the initial policy's checkpoint bytes from path, checked. With fresh set
// and no file at path, it builds a policy of the default sizes for the tokenizer and codebook,
// initialised from seed, and warns: laptop mode's fallback on a checkout without trained models;
// cluster roles never set fresh.
func InitCheckpoint(backend backends.Backend, path string, cb *vq.Codebook, seed uint64, fresh bool, log zerolog.Logger) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if _, err := ParseCheckpoint(b); err != nil {
			return nil, fmt.Errorf("initial policy %s: %w", path, err)
		}
		return b, nil
	}
	if !fresh || !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("initial policy: %w", err)
	}
	b, err = newCheckpoint(backend, ForVocabularies(DefaultConfig(), tokenizer.New(), cb), seed)
	if err != nil {
		return nil, fmt.Errorf("initial policy: %w", err)
	}
	log.Warn().Str("missing", path).Msg("no base policy checkpoint: starting from an untrained policy " +
		"(run `go run ./learner pretrain` to build models/base.safetensors)")
	return b, nil
}

// TinyCheckpoint returns the checkpoint of a small untrained policy (d_model 16, one layer) for
// the tokenizer and the codebook: what tests and benchmarks of the pipeline train, fast on two
// cores.
func TinyCheckpoint(backend backends.Backend, cb *vq.Codebook, seed uint64) ([]byte, error) {
	sizes := Config{TextLen: 40, DModel: 16, Heads: 2, Layers: 1, FF: 32}
	return newCheckpoint(backend, ForVocabularies(sizes, tokenizer.New(), cb), seed)
}

func newCheckpoint(backend backends.Backend, cfg Config, seed uint64) ([]byte, error) {
	m, err := New(backend, cfg, seed)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := m.Save(&buf, SaveOptions{}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
