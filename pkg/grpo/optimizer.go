package grpo

import (
	"fmt"
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph code reads as math
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"

	"github.com/bicot-rl/bicot/pkg/config"
)

// scheduleScope holds the schedule's own step counter (checkpointed with the context).
const scheduleScope = "grpo_schedule"

// learningRateGraph is o.LearningRate in the graph, driven by a step counter it increments.
func learningRateGraph(o config.OptimizerOptions, ctx *context.Context, g *Graph, dt dtypes.DType) *Node {
	step := MinusOne(optimizers.IncrementGlobalStepGraph(ctx.In(scheduleScope), g, dt)) // before increment
	lr := Scalar(g, dt, o.LR)
	if o.Schedule == config.ScheduleCosine {
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
	o    config.OptimizerOptions
	adam withGradients
}

// withGradients is the part of gomlx's Adam this package uses: it is not in optimizers.Interface.
type withGradients interface {
	UpdateGraphWithGradients(ctx *context.Context, grads []*Node, lossDType dtypes.DType)
	Clear(ctx *context.Context) error
}

var _ optimizers.Interface = (*Optimizer)(nil)

// NewOptimizer validates o and builds the optimizer.
func NewOptimizer(o config.OptimizerOptions) (*Optimizer, error) {
	if o.Schedule == "" {
		o.Schedule = config.ScheduleConstant
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
func (opt *Optimizer) Options() config.OptimizerOptions { return opt.o }

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
	lr := learningRateGraph(opt.o, ctx, g, dt)
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
