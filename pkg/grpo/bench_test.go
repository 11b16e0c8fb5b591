package grpo

import (
	"testing"

	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/bicot-rl/bicot/pkg/config"
)

// BenchmarkLossAndGradient: one batch of 32 samples with 24 plan and 36 image tokens (the
// default image length), loss plus gradients w.r.t. both log-prob inputs.
func BenchmarkLossAndGradient(b *testing.B) {
	const B, Tp, Ti = 32, 24, 36
	exec, err := NewExecAny(backend(b), func(in []*Node) []*Node {
		o := config.DefaultLossOptions()
		o.Clip = true
		out := Loss(LossInputs{
			PlanLogp: in[0], PlanOld: in[0], PlanRef: in[0], PlanMask: in[1],
			ImageLogp: in[2], ImageOld: in[2], ImageRef: in[2], ImageMask: in[3], Advantages: in[4],
		}, o)
		return append([]*Node{out.Loss}, Gradient(out.Loss, in[0], in[2])...)
	})
	if err != nil {
		b.Fatal(err)
	}
	mk := func(rows, cols int, v float32) *tensors.Tensor {
		x := make([]float32, rows*cols)
		for i := range x {
			x[i] = v
		}
		return tensors.FromFlatDataAndDimensions(x, rows, cols)
	}
	adv := make([]float32, B)
	args := []any{mk(B, Tp, -1), mk(B, Tp, 1), mk(B, Ti, -2), mk(B, Ti, 1), tensors.FromFlatDataAndDimensions(adv, B)}
	for b.Loop() {
		if _, err := exec.Exec(args...); err != nil {
			b.Fatal(err)
		}
	}
}
