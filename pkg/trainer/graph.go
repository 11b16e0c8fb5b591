package trainer

import (
	"fmt"

	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph code reads as math
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/bicot-rl/bicot/pkg/grpo"
)

// trainInputs are the train graph's inputs by name: T is *Node inside trainGraph and
// *tensors.Tensor where Step feeds the exec. The exec passes them as one positional list, whose
// order fields alone decides, so the graph and its caller cannot disagree on it.
type trainInputs[T any] struct {
	Tokens                        T // [B,T]
	PlanOld, PlanRef, PlanMask    T // [B,L]
	ImageOld, ImageRef, ImageMask T // [B,I]
	Advantages                    T // [B]
	// The supervised anchor's batch: tokens [S,T], text mask [S,L], image mask [S,I]. Only the sft
	// exec takes them.
	SFTTokens, SFTTextMask, SFTImageMask T
	sft                                  bool
}

// fields is the exec's input order.
func (in *trainInputs[T]) fields() []*T {
	f := []*T{&in.Tokens, &in.PlanOld, &in.PlanRef, &in.PlanMask, &in.ImageOld, &in.ImageRef, &in.ImageMask, &in.Advantages}
	if in.sft {
		f = append(f, &in.SFTTokens, &in.SFTTextMask, &in.SFTImageMask)
	}
	return f
}

// trainOutputs are the train graph's scalar outputs by name, all measured before the update: T
// is *Node inside trainGraph and float64 once Step has read them. As with trainInputs, fields
// alone decides their position in the exec's output list.
type trainOutputs[T any] struct {
	Loss                T // the GRPO loss alone, without the anchor's term
	KL, PlanKL, ImageKL T
	RatioMean           T
	ClipFraction        T
	Tokens              T // trained tokens (0: the ratio extremes are the reductions' sentinels)
	RatioMin, RatioMax  T
	GradNorm            T
	LR                  T
	SFTLoss             T // the supervised anchor's mean NLL; sft exec only
	sft                 bool
}

// trainOutput is one output with the metric name a non-finite value is reported under.
type trainOutput[T any] struct {
	name string
	p    *T
}

// fields is the exec's output order.
func (o *trainOutputs[T]) fields() []trainOutput[T] {
	f := []trainOutput[T]{{"loss", &o.Loss}, {"kl", &o.KL}, {"plan_kl", &o.PlanKL}, {"image_kl", &o.ImageKL},
		{"ratio_mean", &o.RatioMean}, {"clip_fraction", &o.ClipFraction}, {"tokens", &o.Tokens},
		{"ratio_min", &o.RatioMin}, {"ratio_max", &o.RatioMax}, {"grad_norm", &o.GradNorm}, {"lr", &o.LR}}
	if o.sft {
		f = append(f, trainOutput[T]{"sft_loss", &o.SFTLoss})
	}
	return f
}

// newTrainExec compiles the update, with the supervised anchor's inputs and output or without:
// the two are separate execs because a graph's arity is fixed.
func (t *Trainer) newTrainExec(sft bool) (*context.Exec, error) {
	return context.NewExec(t.policy.Backend, t.policy.Ctx, func(ctx *context.Context, nodes []*Node) []*Node {
		in := trainInputs[*Node]{sft: sft}
		fs := in.fields()
		if len(nodes) != len(fs) {
			panic(fmt.Errorf("train graph: %d inputs, want %d", len(nodes), len(fs)))
		}
		for i, f := range fs {
			*f = nodes[i]
		}
		out := t.trainGraph(ctx, in)
		var res []*Node
		for _, f := range out.fields() {
			res = append(res, *f.p)
		}
		return res
	})
}

// trainGraph is one update: the GRPO loss of the batch, with the supervised anchor (in.sft) its
// mean NLL times SFTCoef added to what the optimiser sees.
func (t *Trainer) trainGraph(ctx *context.Context, in trainInputs[*Node]) trainOutputs[*Node] {
	g := in.Tokens.Graph()
	tl, il := t.policy.LogProbsGraph(ctx, in.Tokens, t.scoreOptions())
	out := grpo.Loss(grpo.LossInputs{
		PlanLogp: tl, PlanOld: in.PlanOld, PlanRef: in.PlanRef, PlanMask: in.PlanMask,
		ImageLogp: il, ImageOld: in.ImageOld, ImageRef: in.ImageRef, ImageMask: in.ImageMask,
		Advantages: in.Advantages,
	}, t.opts.Loss)
	total := out.Loss
	var nll *Node
	if in.sft {
		nll, _, _ = t.policy.SupervisedLossGraph(ctx, in.SFTTokens, in.SFTTextMask, in.SFTImageMask)
		total = Add(total, MulScalar(nll, t.opts.SFTCoef))
	}
	// Extremes of the ratio over trained tokens (masked positions cannot win either reduction).
	ratios := func(lp, old, mask *Node) (lo, hi *Node) {
		on := GreaterThan(mask, ZerosLike(mask))
		r := Exp(Where(on, Sub(StopGradient(lp), old), ZerosLike(lp)))
		big := Scalar(g, r.DType(), 1e30)
		lo = ReduceAllMin(Where(on, r, BroadcastToDims(big, r.Shape().Dimensions...)))
		hi = ReduceAllMax(Where(on, r, BroadcastToDims(Neg(big), r.Shape().Dimensions...)))
		return
	}
	tlo, thi := ratios(tl, in.PlanOld, in.PlanMask)
	ilo, ihi := ratios(il, in.ImageOld, in.ImageMask)
	diag := t.opt.Step(ctx, g, total)
	return trainOutputs[*Node]{
		Loss: out.Loss, KL: out.MeanKL, PlanKL: out.PlanKL, ImageKL: out.ImageKL,
		RatioMean: out.MeanRatio, ClipFraction: out.ClipFraction, Tokens: out.Tokens,
		RatioMin: Min(tlo, ilo), RatioMax: Max(thi, ihi), GradNorm: diag.GradNorm, LR: diag.LR,
		SFTLoss: nll, sft: in.sft,
	}
}
