package pretrain

import (
	"fmt"

	"github.com/bicot-rl/bicot/pkg/model"
	"github.com/bicot-rl/bicot/pkg/plan"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/tokenizer"
	"github.com/bicot-rl/bicot/pkg/vq"
)

// policyConfig joins the model sizes and learning aids of c with the tokenizer's and codebook's
// vocabularies.
func (c Config) policyConfig(vocab *tokenizer.Vocab, cb *vq.Codebook) (model.Config, error) {
	mc := model.ForVocabularies(model.Config{
		TextLen: c.TextLen, DModel: c.DModel, Heads: c.Heads, Layers: c.Layers, FF: c.FF,
		SinusoidalPositions: c.Sinusoidal, TiedTextHead: c.TiedTextHead,
	}, vocab, cb)
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
		cells, err := cellTokens(vocab, cb)
		if err != nil {
			return mc, err
		}
		mc.CellTokens = cells
	}
	return mc, mc.Validate()
}

// cellTokens is, for every image code position, the plan word of the cell it lies in: image code
// i is patch (r, c) in raster order, and a patch never straddles two cells.
func cellTokens(vocab *tokenizer.Vocab, cb *vq.Codebook) ([]int32, error) {
	sc := cb.Config()
	n := cb.PatchesPerSide()
	out := make([]int32, 0, cb.TokensPerImage())
	for i := 0; i < cb.TokensPerImage(); i++ {
		row, col := (i/n)*cb.Patch()/sc.Cell, (i%n)*cb.Patch()/sc.Cell
		name := plan.CellName(row, col)
		id, ok := vocab.ID(name)
		if !ok {
			return nil, fmt.Errorf("tie cells: cell name %q is not in the vocabulary", name)
		}
		out = append(out, int32(id))
	}
	return out, nil
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
