package pretrain

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph code reads as math
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"

	"github.com/bicot-rl/bicot/pkg/model"
)

// StepStats reports one training step.
type StepStats struct {
	Loss, TextNLL, ImageNLL float64
	LearningRate            float64
}

// Trainer runs supervised (pretraining) steps with Adam on a policy's context. The optimizer
// state lives in the same context (outside model.Scope), so model.SaveOptions{Optimizer: true}
// checkpoints it.
type Trainer struct {
	m    *model.Model
	exec *context.Exec
	lr   *context.Variable

	// Sharded steps (shards > 1): gradExec computes one shard's gradients, updateExec applies
	// their sum; vars are the trainable policy variables in the order of both.
	shards     int
	gradExec   *context.Exec
	updateExec *context.Exec
	vars       []*context.Variable
}

// TrainerOptions configure NewTrainer.
type TrainerOptions struct {
	LearningRate, WeightDecay float64
	// Shards > 1 splits every batch into that many contiguous shards whose gradients are computed
	// concurrently and summed before one Adam update: the same update as one pass over the batch
	// (up to float rounding), but it keeps several cores busy. The pure-Go backend runs a graph's
	// ops one after another and most of them on one core, so on a 2-core machine two shards
	// nearly double the steps per second. Leave it at 1 on an accelerator.
	Shards int
}

// NewTrainer prepares the pretraining step of m. The learning rate may be changed per step
// (SetLearningRate), e.g. by a schedule on the caller's side (CosineLR).
func NewTrainer(m *model.Model, o TrainerOptions) (*Trainer, error) {
	learningRate, weightDecay := o.LearningRate, o.WeightDecay
	if !(learningRate > 0) || math.IsInf(learningRate, 0) {
		return nil, fmt.Errorf("trainer: learning rate %v must be > 0", learningRate)
	}
	if o.Shards < 0 {
		return nil, fmt.Errorf("trainer: shards %d < 0", o.Shards)
	}
	opt := optimizers.Adam().LearningRate(learningRate).WeightDecay(weightDecay).Done()
	if o.Shards > 1 {
		return newShardedTrainer(m, opt, o)
	}
	e, err := m.Exec(fmt.Sprintf("train/%g/%g", learningRate, weightDecay), func(ctx *context.Context, tokens, textMask, imageMask *Node) []*Node {
		loss, tn, in := m.SupervisedLossGraph(ctx, tokens, textMask, imageMask)
		opt.UpdateGraph(ctx, tokens.Graph(), loss)
		return []*Node{loss, tn, in}
	})
	if err != nil {
		return nil, err
	}
	lr := optimizers.LearningRateVarWithValue(m.Ctx, dtypes.Float32, learningRate)
	return &Trainer{m: m, exec: e, lr: lr, shards: 1}, nil
}

// gradientApplier is the part of gomlx's optimizers that applies given gradients (Adam has it).
type gradientApplier interface {
	UpdateGraphWithGradients(ctx *context.Context, grads []*Node, lossDType dtypes.DType)
}

func newShardedTrainer(m *model.Model, opt optimizers.Interface, o TrainerOptions) (*Trainer, error) {
	apply, ok := opt.(gradientApplier)
	if !ok {
		return nil, fmt.Errorf("trainer: optimizer %T cannot apply precomputed gradients", opt)
	}
	t := &Trainer{m: m, shards: o.Shards}
	for v := range m.Ctx.IterVariables() {
		if v.Trainable && model.IsPolicyVariable(v) {
			t.vars = append(t.vars, v)
		}
	}
	if len(t.vars) == 0 {
		return nil, fmt.Errorf("trainer: the policy has no trainable variables")
	}
	// A shard's loss divides its NLL sums by the whole batch's token counts, so the shards'
	// gradients add up to the gradient of the batch's per-level means.
	var err error
	t.gradExec, err = m.Exec("train/shard-gradients", func(ctx *context.Context, in []*Node) []*Node {
		tokens, textMask, imageMask, textCount, imageCount := in[0], in[1], in[2], in[3], in[4]
		tl, il := m.LogProbsGraph(ctx, tokens, model.ScoreOptions{})
		textSum := Neg(ReduceAllSum(Mul(tl, textMask)))
		imageSum := Neg(ReduceAllSum(Mul(il, imageMask)))
		loss := Add(Div(textSum, textCount), Div(imageSum, imageCount))
		g := tokens.Graph()
		nodes := make([]*Node, len(t.vars))
		for i, v := range t.vars {
			nodes[i] = v.ValueGraph(g)
		}
		return append([]*Node{textSum, imageSum}, Gradient(loss, nodes...)...)
	})
	if err != nil {
		return nil, err
	}
	t.updateExec, err = m.Exec(fmt.Sprintf("train/apply-%d/%g/%g", o.Shards, o.LearningRate, o.WeightDecay), func(ctx *context.Context, in []*Node) []*Node {
		g := in[0].Graph()
		grads := make([]*Node, len(t.vars))
		for i, v := range t.vars {
			v.ValueGraph(g) // the optimizer updates the variables this graph uses, in context order
			grads[i] = in[i]
			for s := 1; s < o.Shards; s++ {
				grads[i] = Add(grads[i], in[s*len(t.vars)+i])
			}
		}
		apply.UpdateGraphWithGradients(ctx, grads, dtypes.Float32)
		return []*Node{ReduceAllSum(in[0])}
	})
	if err != nil {
		return nil, err
	}
	t.lr = optimizers.LearningRateVarWithValue(m.Ctx, dtypes.Float32, o.LearningRate)
	return t, nil
}

// SetLearningRate changes the learning rate used from the next step on.
func (t *Trainer) SetLearningRate(lr float64) error {
	if !(lr >= 0) || math.IsInf(lr, 0) {
		return fmt.Errorf("trainer: learning rate %v must be finite and >= 0", lr)
	}
	return t.lr.SetValue(tensors.FromScalar(float32(lr)))
}

// Step applies one Adam update on the batch and returns the losses before the update.
func (t *Trainer) Step(b model.Batch) (StepStats, error) {
	c := t.m.Config
	N := len(b.Tokens)
	if N == 0 || len(b.TextMask) != N || len(b.ImageMask) != N {
		return StepStats{}, fmt.Errorf("train step: %d sequences, %d text masks, %d image masks", N, len(b.TextMask), len(b.ImageMask))
	}
	tok, err := t.m.FlatTokens(b.Tokens)
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
	var s StepStats
	if t.shards > 1 {
		s, err = t.shardedStep(N, tok, tm, im)
		if err != nil {
			return StepStats{}, fmt.Errorf("train step: %w", err)
		}
	} else {
		out, err := t.exec.Exec(tensors.FromFlatDataAndDimensions(tok, N, c.SeqLen()), tensors.FromFlatDataAndDimensions(tm, N, c.TextLen),
			tensors.FromFlatDataAndDimensions(im, N, c.ImageTokens))
		if err != nil {
			return StepStats{}, fmt.Errorf("train step: %w", err)
		}
		s = StepStats{
			Loss:     float64(tensors.ToScalar[float32](out[0])),
			TextNLL:  float64(tensors.ToScalar[float32](out[1])),
			ImageNLL: float64(tensors.ToScalar[float32](out[2])),
		}
	}
	s.LearningRate = float64(tensors.ToScalar[float32](t.lr.MustValue()))
	if math.IsNaN(s.Loss) || math.IsInf(s.Loss, 0) {
		return s, fmt.Errorf("train step: loss is %v", s.Loss)
	}
	return s, nil
}

// shardedStep computes the shards' gradients concurrently (contiguous slices of the batch, so the
// sum is the same whatever the scheduling) and applies their sum.
func (t *Trainer) shardedStep(N int, tokens []int32, textMask, imageMask []float32) (StepStats, error) {
	c := t.m.Config
	shards := min(t.shards, N)
	var textCount, imageCount float32
	for _, v := range textMask {
		textCount += v
	}
	for _, v := range imageMask {
		imageCount += v
	}
	outs := make([][]*tensors.Tensor, shards)
	errs := make([]error, shards)
	var wg sync.WaitGroup
	for k := 0; k < shards; k++ {
		lo, hi := k*N/shards, (k+1)*N/shards
		tok := tensors.FromFlatDataAndDimensions(tokens[lo*c.SeqLen():hi*c.SeqLen()], hi-lo, c.SeqLen())
		tm := tensors.FromFlatDataAndDimensions(textMask[lo*c.TextLen:hi*c.TextLen], hi-lo, c.TextLen)
		im := tensors.FromFlatDataAndDimensions(imageMask[lo*c.ImageTokens:hi*c.ImageTokens], hi-lo, c.ImageTokens)
		// Each shard gets its own count tensors: one tensor handed to two concurrent executions
		// can lose its host copy to the other's device transfer ("no local or on-device
		// representation").
		tc, ic := tensors.FromScalar(max(textCount, 1)), tensors.FromScalar(max(imageCount, 1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[k], errs[k] = t.gradExec.Exec(tok, tm, im, tc, ic)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return StepStats{}, err
	}
	var textSum, imageSum float64
	grads := make([]any, 0, t.shards*len(t.vars))
	for k := 0; k < t.shards; k++ {
		if k >= shards { // fewer rows than shards: the missing shards add nothing
			for _, g := range outs[0][2:] {
				grads = append(grads, tensors.FromShape(g.Shape()))
			}
			continue
		}
		textSum += float64(tensors.ToScalar[float32](outs[k][0]))
		imageSum += float64(tensors.ToScalar[float32](outs[k][1]))
		for _, g := range outs[k][2:] {
			grads = append(grads, g)
		}
	}
	if _, err := t.updateExec.Exec(grads...); err != nil {
		return StepStats{}, err
	}
	s := StepStats{TextNLL: textSum / float64(max(textCount, 1)), ImageNLL: imageSum / float64(max(imageCount, 1))}
	s.Loss = s.TextNLL + s.ImageNLL
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
