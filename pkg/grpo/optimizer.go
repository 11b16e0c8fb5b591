package grpo

import (
	"fmt"
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph code reads as math
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"
)

// Schedule kinds for the learning rate.
const (
	ScheduleConstant = "constant" // optional linear warm-up, then constant
	ScheduleCosine   = "cosine"   // optional linear warm-up, then cosine decay to MinLR
)

// OptimizerOptions configure the update: global-norm gradient clipping, then AdamW.
//
// AdamW is gomlx v0.26's optimizers.Adam().WeightDecay(wd): decoupled decay lr*wd*w added to the
// step, applied to every trainable variable. gomlx has no global-norm clipping (only per-value
// step clipping) and its cosine schedule restarts each period and warms up from MinLR, so this
// package computes gradients itself, clips them, sets the learning-rate variable from its own
// schedule, and hands the result to Adam's UpdateGraphWithGradients.
type OptimizerOptions struct {
	LR          float64 `yaml:"lr"`
	Beta1       float64 `yaml:"beta1"`
	Beta2       float64 `yaml:"beta2"`
	Epsilon     float64 `yaml:"epsilon"`
	WeightDecay float64 `yaml:"weight_decay"`
	// ClipNorm is the maximum global L2 norm of the gradients; 0 disables clipping.
	ClipNorm float64 `yaml:"clip_norm"`
	// Schedule: constant (default) or cosine.
	Schedule    string  `yaml:"schedule"`
	WarmupSteps int     `yaml:"warmup_steps"`
	TotalSteps  int     `yaml:"total_steps"` // cosine: steps until MinLR (warm-up included)
	MinLR       float64 `yaml:"min_lr"`
}

// DefaultOptimizerOptions follow the reference (lr 1e-6, AdamW betas 0.9/0.999, eps 1e-8, weight
// decay 0, grad-norm clip 1.0, constant schedule).
func DefaultOptimizerOptions() OptimizerOptions {
	return OptimizerOptions{LR: 1e-6, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-8, ClipNorm: 1, Schedule: ScheduleConstant}
}

// Validate checks the options.
func (o OptimizerOptions) Validate() error {
	fin := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	switch {
	case !fin(o.LR) || o.LR <= 0:
		return fmt.Errorf("optimizer: lr %v: want a finite value > 0", o.LR)
	case !fin(o.Beta1) || o.Beta1 < 0 || o.Beta1 >= 1:
		return fmt.Errorf("optimizer: beta1 %v: want 0 <= beta1 < 1", o.Beta1)
	case !fin(o.Beta2) || o.Beta2 < 0 || o.Beta2 >= 1:
		return fmt.Errorf("optimizer: beta2 %v: want 0 <= beta2 < 1", o.Beta2)
	case !fin(o.Epsilon) || o.Epsilon <= 0:
		return fmt.Errorf("optimizer: epsilon %v: want a finite value > 0", o.Epsilon)
	case !fin(o.WeightDecay) || o.WeightDecay < 0:
		return fmt.Errorf("optimizer: weight_decay %v: want a finite value >= 0", o.WeightDecay)
	case !fin(o.ClipNorm) || o.ClipNorm < 0:
		return fmt.Errorf("optimizer: clip_norm %v: want a finite value >= 0 (0 = off)", o.ClipNorm)
	case o.WarmupSteps < 0:
		return fmt.Errorf("optimizer: warmup_steps %d: want >= 0", o.WarmupSteps)
	case !fin(o.MinLR) || o.MinLR < 0 || o.MinLR > o.LR:
		return fmt.Errorf("optimizer: min_lr %v: want 0 <= min_lr <= lr (%v)", o.MinLR, o.LR)
	}
	switch o.Schedule {
	case "", ScheduleConstant:
	case ScheduleCosine:
		if o.TotalSteps <= o.WarmupSteps {
			return fmt.Errorf("optimizer: cosine schedule needs total_steps (%d) > warmup_steps (%d)", o.TotalSteps, o.WarmupSteps)
		}
	default:
		return fmt.Errorf("optimizer: schedule %q: want constant or cosine", o.Schedule)
	}
	return nil
}

// LearningRate is the schedule on the host: the rate used by update number step (0-based).
// Warm-up rises linearly lr*(step+1)/warmup, so the first update is not wasted at zero.
func (o OptimizerOptions) LearningRate(step int64) float64 {
	if step < int64(o.WarmupSteps) {
		return o.LR * float64(step+1) / float64(o.WarmupSteps)
	}
	if o.Schedule != ScheduleCosine {
		return o.LR
	}
	p := float64(step-int64(o.WarmupSteps)) / float64(o.TotalSteps-o.WarmupSteps)
	p = min(p, 1)
	return o.MinLR + (o.LR-o.MinLR)*0.5*(1+math.Cos(math.Pi*p))
}

// scheduleScope holds the schedule's own step counter (checkpointed with the context).
const scheduleScope = "grpo_schedule"

// learningRateGraph is LearningRate in the graph, driven by a step counter it increments.
func (o OptimizerOptions) learningRateGraph(ctx *context.Context, g *Graph, dt dtypes.DType) *Node {
	step := MinusOne(optimizers.IncrementGlobalStepGraph(ctx.In(scheduleScope), g, dt)) // before increment
	lr := Scalar(g, dt, o.LR)
	if o.Schedule == ScheduleCosine {
		p := DivScalar(SubScalar(step, float64(o.WarmupSteps)), float64(o.TotalSteps-o.WarmupSteps))
		p = ClipScalar(p, 0, 1)
		cos := DivScalar(OnePlus(Cos(MulScalar(p, math.Pi))), 2)
		lr = AddScalar(MulScalar(cos, o.LR-o.MinLR), o.MinLR)
	}
	if o.WarmupSteps > 0 {
		warm := MulScalar(OnePlus(step), o.LR/float64(o.WarmupSteps))
		lr = Where(LessThan(step, Scalar(g, dt, float64(o.WarmupSteps))), warm, lr)
	}
	return lr
}

// Optimizer is global-norm clipping + AdamW + schedule. It implements optimizers.Interface, so it
// also plugs into gomlx's train.Trainer.
type Optimizer struct {
	o    OptimizerOptions
	adam withGradients
}

// withGradients is the part of gomlx's Adam this package uses: it is not in optimizers.Interface.
type withGradients interface {
	UpdateGraphWithGradients(ctx *context.Context, grads []*Node, lossDType dtypes.DType)
	Clear(ctx *context.Context) error
}

var _ optimizers.Interface = (*Optimizer)(nil)

// NewOptimizer validates o and builds the optimizer.
func NewOptimizer(o OptimizerOptions) (*Optimizer, error) {
	if o.Schedule == "" {
		o.Schedule = ScheduleConstant
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	a := optimizers.Adam().LearningRate(o.LR).Betas(o.Beta1, o.Beta2).Epsilon(o.Epsilon).WeightDecay(o.WeightDecay).Done()
	wg, ok := a.(withGradients)
	if !ok {
		return nil, fmt.Errorf("optimizer: gomlx Adam (%T) lacks UpdateGraphWithGradients", a)
	}
	return &Optimizer{o: o, adam: wg}, nil
}

// Options returns the optimizer's settings.
func (opt *Optimizer) Options() OptimizerOptions { return opt.o }

// StepDiagnostics are scalars of one update.
type StepDiagnostics struct {
	// GradNorm is the global gradient norm before clipping.
	GradNorm *Node
	// LR is the learning rate this update used.
	LR *Node
}

// Step builds one update of every trainable variable in ctx from the scalar loss.
func (opt *Optimizer) Step(ctx *context.Context, g *Graph, loss *Node) StepDiagnostics {
	if !loss.Shape().IsScalar() {
		panic(fmt.Errorf("grpo optimizer: loss shape %s, want a scalar", loss.Shape()))
	}
	grads := ctx.BuildTrainableVariablesGradientsGraph(loss)
	if len(grads) == 0 {
		panic(fmt.Errorf("grpo optimizer: no trainable variables"))
	}
	return opt.StepWithGradients(ctx, g, grads, loss.DType())
}

// StepWithGradients is Step from precomputed gradients (in ctx's trainable-variable order).
func (opt *Optimizer) StepWithGradients(ctx *context.Context, g *Graph, grads []*Node, dt dtypes.DType) StepDiagnostics {
	grads, norm := ClipByGlobalNorm(grads, opt.o.ClipNorm)
	lr := opt.o.learningRateGraph(ctx, g, dt)
	// Adam reads the learning-rate variable; setting its graph value first makes it use ours.
	optimizers.LearningRateVar(ctx, dt, opt.o.LR).SetValueGraph(lr)
	opt.adam.UpdateGraphWithGradients(ctx, grads, dt)
	return StepDiagnostics{GradNorm: ConvertDType(norm, dt), LR: lr}
}

// UpdateGraph implements optimizers.Interface.
func (opt *Optimizer) UpdateGraph(ctx *context.Context, g *Graph, loss *Node) { opt.Step(ctx, g, loss) }

// UpdateGraphWithGradients implements optimizers.Interface.
func (opt *Optimizer) UpdateGraphWithGradients(ctx *context.Context, grads []*Node, dt dtypes.DType) {
	if len(grads) == 0 {
		panic(fmt.Errorf("grpo optimizer: no gradients"))
	}
	opt.StepWithGradients(ctx, grads[0].Graph(), grads, dt)
}

// Clear implements optimizers.Interface: it drops Adam's moments (the schedule's counter stays).
func (opt *Optimizer) Clear(ctx *context.Context) error { return opt.adam.Clear(ctx) }

// ClipByGlobalNorm scales every gradient by min(1, maxNorm/norm), norm being the L2 norm of all
// gradients together, and returns the norm before clipping. maxNorm 0 only measures.
func ClipByGlobalNorm(grads []*Node, maxNorm float64) ([]*Node, *Node) {
	if len(grads) == 0 {
		panic(fmt.Errorf("clip by global norm: no gradients"))
	}
	dt := grads[0].DType()
	var sq *Node
	for _, gr := range grads {
		s := ReduceAllSum(Square(ConvertDType(gr, dt)))
		if sq == nil {
			sq = s
		} else {
			sq = Add(sq, s)
		}
	}
	norm := Sqrt(sq)
	if maxNorm <= 0 {
		return grads, norm
	}
	// Below the limit the scale is exactly 1, so unclipped gradients pass bit for bit.
	scale := Where(GreaterThan(norm, Scalar(norm.Graph(), dt, maxNorm)),
		Div(Scalar(norm.Graph(), dt, maxNorm), norm), OnesLike(norm))
	out := make([]*Node, len(grads))
	for i, gr := range grads {
		out[i] = Mul(gr, ConvertDType(scale, gr.DType()))
	}
	return out, norm
}
