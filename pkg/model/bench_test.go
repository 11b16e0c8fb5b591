package model

import (
	"testing"

	"github.com/bicot-rl/bicot/pkg/mlx"
)

// benchConfig is DefaultConfig with vocabulary sizes close to the shipped tokenizer and codebook
// and the shipped base's learning aids (cell tokens and the cell bag).
func benchConfig() Config {
	c := DefaultConfig()
	c.TextVocab, c.ImageVocab = 128, 241
	c.Special = Specials{Pad: 0, BOS: 1, EOS: 2, Plan: 3, ImgStart: 4, Uncond: 5}
	for i := 0; i < c.ImageTokens; i++ {
		c.CellTokens = append(c.CellTokens, int32(100+i))
	}
	c.CellBag, c.PhraseSeparators = true, []int32{6}
	return c
}

// benchSample reports generated positions per second for 4 prompts x 8 samples with guidance
// (the rollout shape): every row advances SeqLen-1 positions per call.
func benchSample(b *testing.B, full bool) { benchSampleCFG(b, full, 3) }

// benchSampleCFG is benchSample at guidance weight cfg (0: no guidance, one row per sample
// instead of a conditional and an unconditional one).
func benchSampleCFG(b *testing.B, full bool, cfg float64) {
	backend, err := mlx.NewBackend("")
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(backend, benchConfig(), 1)
	if err != nil {
		b.Fatal(err)
	}
	prompts := [][]int32{{6, 7, 8, 9}, {10, 11, 12}, {13, 14, 15, 16, 17}, {18, 19}}
	req := SampleRequest{Prompts: prompts, G: 8, Seed: 1, CFGWeight: cfg, FullForward: full}
	if _, err := m.Sample(req); err != nil { // compile outside the timing
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Step = uint64(i)
		if _, err := m.Sample(req); err != nil {
			b.Fatal(err)
		}
	}
	tokens := float64(b.N * len(prompts) * req.G * (m.Config.SeqLen() - 1))
	b.ReportMetric(tokens/b.Elapsed().Seconds(), "tokens/s")
}

func BenchmarkSampleKVCache(b *testing.B)     { benchSample(b, false) }
func BenchmarkSampleFullForward(b *testing.B) { benchSample(b, true) }
func BenchmarkSampleNoCFG(b *testing.B)       { benchSampleCFG(b, false, 0) }
