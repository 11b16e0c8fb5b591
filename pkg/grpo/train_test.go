package grpo

import (
	"testing"

	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/bicot-rl/bicot/pkg/config"
)

// TestGRPOStepsFavourHighReward trains a 4-way categorical "policy" (one logit vector shared by
// plan and image positions) on a fixed group: token 2 earns reward 1, the rest 0. A few clipped
// steps with the full pipeline (advantages -> loss -> clipped AdamW) must raise token 2's
// probability and keep the KL to the frozen start small but positive.
func TestGRPOStepsFavourHighReward(t *testing.T) {
	tokens := []int32{0, 1, 2, 3, 2, 1} // one token per sample, G = 6
	rewards := make([]float64, len(tokens))
	for i, tk := range tokens {
		if tk == 2 {
			rewards[i] = 1
		}
	}
	adv, err := ComputeAdvantages([][]float64{rewards}, AdvantageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o := config.DefaultLossOptions()
	o.Clip = true
	opt, err := NewOptimizer(config.OptimizerOptions{LR: 0.05, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-8, ClipNorm: 1})
	if err != nil {
		t.Fatal(err)
	}
	B := len(tokens)
	logpOf := func(ctx *context.Context, g *Graph) *Node {
		logits := ctx.VariableWithValue("logits", []float32{0, 0, 0, 0}).ValueGraph(g)
		lsm := LogSoftmax(logits, -1)
		idx := InsertAxes(Const(g, tokens), -1)
		return Reshape(Gather(lsm, idx), B, 1) // [B,1]
	}
	ctx := context.New().Checked(false)
	be := backend(t)
	// The start policy is both logp_old (samples drawn from it) and the reference.
	start := context.MustNewExec(be, ctx, func(ctx *context.Context, g *Graph) *Node { return logpOf(ctx, g) }).MustExec()[0]
	step := context.MustNewExec(be, ctx, func(ctx *context.Context, old, a *Node) []*Node {
		lp := logpOf(ctx, old.Graph())
		mask := OnesLike(lp)
		out := Loss(LossInputs{ImageLogp: lp, ImageOld: old, ImageRef: old, ImageMask: mask, Advantages: a}, o)
		opt.Step(ctx, old.Graph(), out.Loss)
		return []*Node{out.Loss, out.MeanKL, Exp(lp)}
	})
	a := tensors.FromValue(adv.Flat())
	var kl float32
	var probs [][]float32
	for range 5 {
		res := step.MustExec(start, a)
		kl = res[1].Value().(float32)
		probs = res[2].Value().([][]float32)
	}
	if p := probs[2][0]; p <= 0.25 {
		t.Fatalf("p(token 2) = %g after training, want > 0.25", p)
	}
	if p := probs[0][0]; p >= 0.25 {
		t.Fatalf("p(token 0) = %g, want < 0.25", p)
	}
	if kl <= 0 {
		t.Fatalf("KL to the start policy %g, want > 0 once the policy moved", kl)
	}
}
