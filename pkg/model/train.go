package model

import (
	"fmt"
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"
)

// Batch is a teacher-forced training batch: full sequences with their loss masks.
type Batch struct {
	Tokens    [][]int32
	TextMask  [][]float32 // [N][TextLen]
	ImageMask [][]float32 // [N][ImageTokens]
}

// StepStats reports one training step.
type StepStats struct {
	Loss, TextNLL, ImageNLL float64
	LearningRate            float64
}

// Trainer runs supervised (pretraining) steps with Adam on the policy's context. The optimizer
// state lives in the same context (outside Scope), so SaveOptions{Optimizer: true} checkpoints it.
type Trainer struct {
	m    *Model
	exec *context.Exec
	lr   *context.Variable
}

// NewTrainer prepares the pretraining step. The learning rate may be changed per step
// (SetLearningRate), e.g. by a schedule on the caller's side.
func (m *Model) NewTrainer(learningRate, weightDecay float64) (*Trainer, error) {
	if !(learningRate > 0) || math.IsInf(learningRate, 0) {
		return nil, fmt.Errorf("trainer: learning rate %v must be > 0", learningRate)
	}
	opt := optimizers.Adam().LearningRate(learningRate).WeightDecay(weightDecay).Done()
	e, err := m.exec(fmt.Sprintf("train/%g/%g", learningRate, weightDecay), func(ctx *context.Context, tokens, textMask, imageMask *Node) []*Node {
		loss, tn, in := m.SupervisedLossGraph(ctx, tokens, textMask, imageMask)
		opt.UpdateGraph(ctx, tokens.Graph(), loss)
		return []*Node{loss, tn, in}
	})
	if err != nil {
		return nil, err
	}
	lr := optimizers.LearningRateVarWithValue(m.Ctx, dtypes.Float32, learningRate)
	return &Trainer{m: m, exec: e, lr: lr}, nil
}

// SetLearningRate changes the learning rate used from the next step on.
func (t *Trainer) SetLearningRate(lr float64) error {
	if !(lr >= 0) || math.IsInf(lr, 0) {
		return fmt.Errorf("trainer: learning rate %v must be finite and >= 0", lr)
	}
	return t.lr.SetValue(tensors.FromScalar(float32(lr)))
}

// Step applies one Adam update on the batch and returns the losses before the update.
func (t *Trainer) Step(b Batch) (StepStats, error) {
	c := t.m.Config
	N := len(b.Tokens)
	if N == 0 || len(b.TextMask) != N || len(b.ImageMask) != N {
		return StepStats{}, fmt.Errorf("train step: %d sequences, %d text masks, %d image masks", N, len(b.TextMask), len(b.ImageMask))
	}
	tok, err := t.m.tokensTensor(b.Tokens)
	if err != nil {
		return StepStats{}, fmt.Errorf("train step: %w", err)
	}
	tm, err := flatMask(b.TextMask, c.TextLen)
	if err != nil {
		return StepStats{}, fmt.Errorf("train step: text mask: %w", err)
	}
	im, err := flatMask(b.ImageMask, c.ImageTokens)
	if err != nil {
		return StepStats{}, fmt.Errorf("train step: image mask: %w", err)
	}
	out, err := t.exec.Exec(tok, tensors.FromFlatDataAndDimensions(tm, N, c.TextLen), tensors.FromFlatDataAndDimensions(im, N, c.ImageTokens))
	if err != nil {
		return StepStats{}, fmt.Errorf("train step: %w", err)
	}
	s := StepStats{
		Loss:         float64(tensors.ToScalar[float32](out[0])),
		TextNLL:      float64(tensors.ToScalar[float32](out[1])),
		ImageNLL:     float64(tensors.ToScalar[float32](out[2])),
		LearningRate: float64(tensors.ToScalar[float32](t.lr.MustValue())),
	}
	if math.IsNaN(s.Loss) || math.IsInf(s.Loss, 0) {
		return s, fmt.Errorf("train step: loss is %v", s.Loss)
	}
	return s, nil
}

func flatMask(rows [][]float32, width int) ([]float32, error) {
	out := make([]float32, 0, len(rows)*width)
	for i, r := range rows {
		if len(r) != width {
			return nil, fmt.Errorf("row %d has %d entries, want %d", i, len(r), width)
		}
		out = append(out, r...)
	}
	return out, nil
}

// CosineLR is a warm-up + cosine decay schedule from peak to peak*minFrac over total steps.
func CosineLR(step, total, warmup int, peak, minFrac float64) float64 {
	if step < warmup {
		return peak * float64(step+1) / float64(warmup)
	}
	p := float64(step-warmup) / float64(max(1, total-warmup))
	p = math.Min(1, p)
	return peak * (minFrac + (1-minFrac)*0.5*(1+math.Cos(math.Pi*p)))
}
