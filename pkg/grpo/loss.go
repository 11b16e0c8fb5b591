package grpo

import (
	"fmt"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph code reads as math

	"github.com/bicot-rl/bicot/pkg/config"
)

// LossInputs are the graph nodes of one batch of B samples. Plan tensors are [B, Tp] and image
// tensors [B, Ti] (padded to fixed lengths); either level may be left nil when the batch has none
// (e.g. no plans). Logp is the policy being trained (the only input that carries gradient), Old
// the log-probs recorded at sampling (logp_old), Ref the frozen reference model's. Masks are Bool
// or numeric (non-zero = token counts) and exclude padding and plan text after end-of-text.
// Advantages is [B].
type LossInputs struct {
	PlanLogp, PlanOld, PlanRef, PlanMask     *Node
	ImageLogp, ImageOld, ImageRef, ImageMask *Node
	Advantages                               *Node
}

// LossOutputs are the scalar loss and diagnostics (token means over the trained tokens).
type LossOutputs struct {
	Loss *Node
	// MeanKL is the mean k3 KL estimate; PlanKL and ImageKL per level (0 when a level is absent).
	MeanKL, PlanKL, ImageKL *Node
	// MeanRatio is the mean of exp(logp - logp_old): 1 while strictly on-policy.
	MeanRatio *Node
	// ClipFraction is the fraction of tokens whose gradient the clipping removed (ratio below
	// 1-eps_low with negative advantage, or above 1+eps_high with positive); 0 without clipping.
	ClipFraction *Node
	// Tokens is the number of tokens trained.
	Tokens *Node
}

// level is one CoT level's masked per-token terms.
type level struct {
	present bool
	loss    *Node // [B,T] per-token loss, zero where masked
	kl      *Node // [B,T]
	ratio   *Node // [B,T]
	clipped *Node // [B,T] 1 where clipping binds
	mask    *Node // [B,T] 0/1
}

// Loss builds the BiCoT-GRPO loss: per token -(min(r*A, clip(r)*A) - beta*KL) with
// r = exp(logp - logp_old) and KL = exp(ref - logp) - (ref - logp) - 1, reduced per o.Norm over
// the levels o.Level selects. Like every gomlx graph function it panics on misuse (invalid
// options, mismatched shapes); call o.Validate first to get an error instead.
func Loss(in LossInputs, o config.LossOptions) LossOutputs {
	if err := o.Validate(); err != nil {
		panic(err)
	}
	if o.Norm == "" {
		o.Norm = config.NormTokenMean
	}
	if o.Level == "" {
		o.Level = config.LevelBoth
	}
	if in.Advantages == nil {
		panic(fmt.Errorf("grpo loss: advantages missing"))
	}
	adv := in.Advantages
	if adv.Rank() != 1 {
		panic(fmt.Errorf("grpo loss: advantages shape %s, want [B]", adv.Shape()))
	}
	plan := buildLevel("plan", in.PlanLogp, in.PlanOld, in.PlanRef, in.PlanMask, adv, o)
	image := buildLevel("image", in.ImageLogp, in.ImageOld, in.ImageRef, in.ImageMask, adv, o)
	if !plan.present && !image.present {
		panic(fmt.Errorf("grpo loss: neither plan nor image inputs given"))
	}
	// A level switched off still takes part in the graph (fixed shapes) but with an all-zero mask,
	// so it adds nothing to numerators or denominators.
	if o.Level == config.LevelImage && plan.present {
		plan = plan.zeroed()
	}
	if o.Level == config.LevelPlan && image.present {
		image = image.zeroed()
	}
	g := adv.Graph()
	dt := adv.DType()
	var levels []level
	for _, l := range []level{plan, image} {
		if l.present {
			levels = append(levels, l)
		}
	}
	sumAll := func(pick func(level) *Node) *Node {
		var s *Node
		for _, l := range levels {
			x := ReduceAllSum(pick(l))
			if s == nil {
				s = x
			} else {
				s = Add(s, x)
			}
		}
		return s
	}
	one := ScalarOne(g, dt)
	safeDiv := func(num, den *Node) *Node { return Div(num, Max(den, one)) }

	tokens := sumAll(func(l level) *Node { return l.mask })
	out := LossOutputs{Tokens: tokens}
	out.MeanKL = safeDiv(sumAll(func(l level) *Node { return l.kl }), tokens)
	out.MeanRatio = safeDiv(sumAll(func(l level) *Node { return l.ratio }), tokens)
	out.ClipFraction = safeDiv(sumAll(func(l level) *Node { return l.clipped }), tokens)
	levelKL := func(l level) *Node {
		if !l.present {
			return ScalarZero(g, dt)
		}
		return safeDiv(ReduceAllSum(l.kl), ReduceAllSum(l.mask))
	}
	out.PlanKL, out.ImageKL = levelKL(plan), levelKL(image)

	switch o.Norm {
	case config.NormTokenMean:
		out.Loss = safeDiv(sumAll(func(l level) *Node { return l.loss }), tokens)
	case config.NormSequenceMean:
		var seqLoss, seqTok *Node
		for _, l := range levels {
			sl, st := ReduceSum(l.loss, 1), ReduceSum(l.mask, 1)
			if seqLoss == nil {
				seqLoss, seqTok = sl, st
			} else {
				seqLoss, seqTok = Add(seqLoss, sl), Add(seqTok, st)
			}
		}
		perSeq := Div(seqLoss, Max(seqTok, OnesLike(seqTok)))
		hasTok := ConvertDType(GreaterThan(seqTok, ZerosLike(seqTok)), dt)
		out.Loss = safeDiv(ReduceAllSum(perSeq), ReduceAllSum(hasTok))
	case config.NormLevelMean:
		var sum, n *Node
		for _, l := range levels {
			cnt := ReduceAllSum(l.mask)
			mean := safeDiv(ReduceAllSum(l.loss), cnt)
			has := ConvertDType(GreaterThan(cnt, ScalarZero(g, dt)), dt)
			if sum == nil {
				sum, n = mean, has
			} else {
				sum, n = Add(sum, mean), Add(n, has)
			}
		}
		out.Loss = safeDiv(sum, n)
	}
	return out
}

func buildLevel(name string, logp, old, ref, mask, adv *Node, o config.LossOptions) level {
	if logp == nil && old == nil && ref == nil && mask == nil {
		return level{}
	}
	if logp == nil || old == nil || ref == nil || mask == nil {
		panic(fmt.Errorf("grpo loss: %s level needs logp, old, ref and mask together", name))
	}
	if logp.Rank() != 2 {
		panic(fmt.Errorf("grpo loss: %s logp shape %s, want [B, T]", name, logp.Shape()))
	}
	for _, x := range []struct {
		what string
		n    *Node
	}{{"old", old}, {"ref", ref}, {"mask", mask}} {
		if !equalDims(x.n.Shape().Dimensions, logp.Shape().Dimensions) {
			panic(fmt.Errorf("grpo loss: %s %s shape %s differs from logp %s", name, x.what, x.n.Shape(), logp.Shape()))
		}
	}
	if logp.Shape().Dimensions[0] != adv.Shape().Dimensions[0] {
		panic(fmt.Errorf("grpo loss: %s batch %d but %d advantages", name, logp.Shape().Dimensions[0], adv.Shape().Dimensions[0]))
	}
	dt := logp.DType()
	if !dt.IsFloat() {
		panic(fmt.Errorf("grpo loss: %s logp dtype %s, want a float", name, dt))
	}
	if old.DType() != dt || ref.DType() != dt || adv.DType() != dt {
		panic(fmt.Errorf("grpo loss: %s: logp, old, ref and advantages must share dtype %s", name, dt))
	}
	var on *Node
	if mask.DType() == dtypes.Bool {
		on = mask
	} else {
		on = NotEqual(mask, ZerosLike(mask))
	}
	zeros := ZerosLike(logp)
	// Masked positions may hold anything (padding, -Inf): replace them before any Exp so neither
	// the value nor the gradient can turn into NaN.
	logp = Where(on, logp, zeros)
	old = Where(on, StopGradient(old), zeros)
	ref = Where(on, StopGradient(ref), zeros)
	a := BroadcastToDims(InsertAxes(StopGradient(adv), -1), logp.Shape().Dimensions...)
	m := ConvertDType(on, dt)

	ratio := Exp(Sub(logp, old))
	surrogate := Mul(ratio, a)
	clipped := zeros
	if o.Clip {
		lo, hi := 1-o.EpsLow, 1+o.EpsHigh
		surrogate = Min(surrogate, Mul(ClipScalar(ratio, lo, hi), a))
		low := LogicalAnd(LessThan(ratio, Scalar(logp.Graph(), dt, lo)), LessThan(a, zeros))
		high := LogicalAnd(GreaterThan(ratio, Scalar(logp.Graph(), dt, hi)), GreaterThan(a, zeros))
		clipped = ConvertDType(LogicalOr(low, high), dt)
	}
	d := Sub(ref, logp)
	kl := Sub(Sub(Exp(d), d), OnesLike(d))
	perToken := Neg(Sub(surrogate, MulScalar(kl, o.Beta)))
	return level{
		present: true,
		loss:    Mul(perToken, m),
		kl:      Mul(kl, m),
		ratio:   Mul(ratio, m),
		clipped: Mul(clipped, m),
		mask:    m,
	}
}

func (l level) zeroed() level {
	z := ZerosLike(l.mask)
	return level{present: true, loss: z, kl: z, ratio: z, clipped: z, mask: z}
}

func equalDims(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
