package pretrain

import (
	"testing"

	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/model"
)

// benchPolicyConfig is pkg/model's benchmark policy: model.DefaultConfig with vocabulary sizes
// close to the shipped tokenizer and codebook and the shipped base's learning aids (cell tokens
// and the cell bag).
func benchPolicyConfig() model.Config {
	c := model.DefaultConfig()
	c.TextVocab, c.ImageVocab = 128, 241
	c.Special = model.Specials{Pad: 0, BOS: 1, EOS: 2, Plan: 3, ImgStart: 4, Uncond: 5}
	for i := 0; i < c.ImageTokens; i++ {
		c.CellTokens = append(c.CellTokens, int32(100+i))
	}
	c.CellBag, c.PhraseSeparators = true, []int32{6}
	return c
}

// BenchmarkPretrainStep is one supervised step of the default model on 32 sequences;
// BenchmarkPretrainStepSharded the same step split into two concurrent shards.
func BenchmarkPretrainStep(b *testing.B)        { benchPretrainStep(b, 1) }
func BenchmarkPretrainStepSharded(b *testing.B) { benchPretrainStep(b, 2) }

func benchPretrainStep(b *testing.B, shards int) {
	backend, err := mlx.NewBackend("")
	if err != nil {
		b.Fatal(err)
	}
	m, err := model.New(backend, benchPolicyConfig(), 1)
	if err != nil {
		b.Fatal(err)
	}
	var batch model.Batch
	for i := 0; i < 32; i++ {
		codes := make([]int, m.Config.ImageTokens)
		for j := range codes {
			codes[j] = (i + j) % m.Config.ImageVocab
		}
		seq, err := m.Config.Sequence([]int32{6, 7, int32(8 + i%5)}, []int32{10, 11, 12, 13, int32(14 + i%7)}, codes)
		if err != nil {
			b.Fatal(err)
		}
		tm, im := m.Config.Masks(seq, false)
		batch.Tokens, batch.TextMask, batch.ImageMask = append(batch.Tokens, seq), append(batch.TextMask, tm), append(batch.ImageMask, im)
	}
	tr, err := NewTrainer(m, TrainerOptions{LearningRate: 1e-3, Shards: shards})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tr.Step(batch); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := tr.Step(batch); err != nil {
			b.Fatal(err)
		}
	}
}
