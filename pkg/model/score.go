package model

import (
	"fmt"

	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// Score returns the teacher-forced log-probs of each sequence (see LogProbsGraph):
// text [len(seqs)][TextLen] and image [len(seqs)][ImageTokens]. Use it with the current policy
// and with a frozen reference (Clone) on the same sequences.
func (m *Model) Score(seqs [][]int32, opts ScoreOptions) (text, image [][]float32, err error) {
	c := m.Config
	if len(seqs) == 0 {
		return nil, nil, fmt.Errorf("score: no sequences")
	}
	tok, err := m.tokensTensor(seqs)
	if err != nil {
		return nil, nil, fmt.Errorf("score: %w", err)
	}
	// Every option is in the key: a compiled graph serves only the options it was built with.
	key := fmt.Sprintf("score/%+v", opts)
	e, err := m.Exec(key, func(ctx *context.Context, tokens *Node) (*Node, *Node) {
		return m.LogProbsGraph(ctx, tokens, opts)
	})
	if err != nil {
		return nil, nil, err
	}
	out, err := e.Exec(tok)
	if err != nil {
		return nil, nil, fmt.Errorf("score: %w", err)
	}
	tf, imf := tensors.MustCopyFlatData[float32](out[0]), tensors.MustCopyFlatData[float32](out[1])
	L, I := c.TextLen, c.ImageTokens
	for n := range seqs {
		text = append(text, tf[n*L:(n+1)*L])
		image = append(image, imf[n*I:(n+1)*I])
	}
	return text, image, nil
}

// TokensTensor packs sequences into the [N, SeqLen] int32 tensor the graphs take, checking
// lengths and ids.
func (m *Model) tokensTensor(seqs [][]int32) (*tensors.Tensor, error) {
	flat, err := m.FlatTokens(seqs)
	if err != nil {
		return nil, err
	}
	return tensors.FromFlatDataAndDimensions(flat, len(seqs), m.Config.SeqLen()), nil
}

// FlatTokens checks seqs (length SeqLen, ids inside the vocabulary) and concatenates them into
// the row-major data of an [N, SeqLen] tensor. The graphs do not fail on an out-of-vocabulary id
// (an out-of-range target scores 0, see pick), they give wrong values, so whatever feeds them
// checks here first.
func (m *Model) FlatTokens(seqs [][]int32) ([]int32, error) {
	c := m.Config
	T := c.SeqLen()
	flat := make([]int32, 0, len(seqs)*T)
	for i, s := range seqs {
		if len(s) != T {
			return nil, fmt.Errorf("sequence %d has %d tokens, want %d", i, len(s), T)
		}
		for j, t := range s {
			if t < 0 || int(t) >= c.Vocab() {
				return nil, fmt.Errorf("sequence %d position %d: token %d outside vocab [0,%d)", i, j, t, c.Vocab())
			}
		}
		flat = append(flat, s...)
	}
	return flat, nil
}

// TokensTensor is the exported packer for callers that feed LogProbsGraph-based executables.
func (m *Model) TokensTensor(seqs [][]int32) (*tensors.Tensor, error) { return m.tokensTensor(seqs) }

// Clone returns an independent copy of the policy (same weights, its own context): the frozen
// reference policy of the RL loss.
func (m *Model) Clone() (*Model, error) {
	ctx, err := m.Ctx.Clone()
	if err != nil {
		return nil, fmt.Errorf("clone policy: %w", err)
	}
	return &Model{Config: m.Config, Backend: m.Backend, Ctx: ctx.Checked(false), execs: map[string]*context.Exec{}}, nil
}
