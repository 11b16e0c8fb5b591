package grpo

import (
	"math"
	"strings"
	"testing"

	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/bicot-rl/bicot/pkg/config"
)

func TestScheduleByHand(t *testing.T) {
	c := config.OptimizerOptions{LR: 1, Schedule: config.ScheduleConstant, WarmupSteps: 4}
	for step, want := range []float64{0.25, 0.5, 0.75, 1, 1, 1} {
		if got := c.LearningRate(int64(step)); !near(got, want, 1e-15) {
			t.Errorf("constant step %d: lr %g, want %g", step, got, want)
		}
	}
	cos := config.OptimizerOptions{LR: 1, MinLR: 0.1, Schedule: config.ScheduleCosine, WarmupSteps: 2, TotalSteps: 6}
	for step, want := range map[int64]float64{0: 0.5, 1: 1, 2: 1, 4: 0.55, 6: 0.1, 100: 0.1} {
		if got := cos.LearningRate(step); !near(got, want, 1e-12) {
			t.Errorf("cosine step %d: lr %g, want %g", step, got, want)
		}
	}
}

// runSteps builds w (float64 [2]) with loss = sum(w*c), takes n optimiser steps and returns w
// after each step with the step's LR and pre-clip gradient norm.
func runSteps(t *testing.T, o config.OptimizerOptions, w0, c []float64, n int) (ws [][]float64, lrs, norms []float64) {
	t.Helper()
	opt, err := NewOptimizer(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.New().Checked(false)
	exec, err := context.NewExecAny(backend(t), ctx, func(ctx *context.Context, coef *Node) []*Node {
		w := ctx.VariableWithValue("w", w0).ValueGraph(coef.Graph())
		loss := ReduceAllSum(Mul(w, coef))
		d := opt.Step(ctx, coef.Graph(), loss)
		return []*Node{d.LR, d.GradNorm}
	})
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		res, err := exec.Exec(tensors.FromValue(c))
		if err != nil {
			t.Fatal(err)
		}
		lrs = append(lrs, res[0].Value().(float64))
		norms = append(norms, res[1].Value().(float64))
		v := ctx.GetVariable("w")
		if v == nil {
			t.Fatal("variable w missing")
		}
		ws = append(ws, v.MustValue().Value().([]float64))
	}
	return ws, lrs, norms
}

func TestAdamWStepByHand(t *testing.T) {
	o := config.OptimizerOptions{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-8, WeightDecay: 0.01, ClipNorm: 1}
	ws, lrs, norms := runSteps(t, o, []float64{1, -2}, []float64{3, -4}, 2)
	if norms[0] != 5 || lrs[0] != 0.1 {
		t.Fatalf("grad norm %g lr %g, want 5 and 0.1", norms[0], lrs[0])
	}
	// Step 1: clipped gradient g = (3,-4)/5; Adam's debiased moments are g and g^2, so the step
	// is lr*g/(|g|+eps) plus decoupled decay lr*wd*w.
	g := []float64{0.6, -0.8}
	w := []float64{1, -2}
	m := []float64{0, 0}
	v := []float64{0, 0}
	for step := 1; step <= 2; step++ {
		for i := range w {
			m[i] = 0.9*m[i] + 0.1*g[i]
			v[i] = 0.999*v[i] + 0.001*g[i]*g[i]
			mh := m[i] / (1 - math.Pow(0.9, float64(step)))
			vh := v[i] / (1 - math.Pow(0.999, float64(step)))
			w[i] -= 0.1*mh/(math.Sqrt(vh)+1e-8) + 0.1*0.01*w[i]
		}
		for i := range w {
			if !near(ws[step-1][i], w[i], 1e-12) {
				t.Errorf("step %d: w = %v, want %v", step, ws[step-1], w)
				break
			}
		}
	}
}

func TestScheduleInGraphMatchesHost(t *testing.T) {
	o := config.DefaultOptimizerOptions()
	o.LR, o.MinLR, o.Schedule, o.WarmupSteps, o.TotalSteps = 0.5, 0.05, config.ScheduleCosine, 2, 7
	_, lrs, _ := runSteps(t, o, []float64{1, 1}, []float64{1, 1}, 9)
	for step, got := range lrs {
		if want := o.LearningRate(int64(step)); !near(got, want, 1e-12) {
			t.Errorf("step %d: graph lr %g, host %g", step, got, want)
		}
	}
}

func TestClipByGlobalNorm(t *testing.T) {
	run := func(maxNorm float64, a, b []float64) ([]float64, []float64, float64) {
		t.Helper()
		e, err := NewExecAny(backend(t), func(in []*Node) []*Node {
			c, n := ClipByGlobalNorm([]*Node{in[0], in[1]}, maxNorm)
			return []*Node{c[0], c[1], n}
		})
		if err != nil {
			t.Fatal(err)
		}
		r, err := e.Exec(tensors.FromValue(a), tensors.FromValue(b))
		if err != nil {
			t.Fatal(err)
		}
		return r[0].Value().([]float64), r[1].Value().([]float64), r[2].Value().(float64)
	}
	// Norm of (3) and (4, 0) is 5: clipped to 2.5 halves everything.
	a, b, n := run(2.5, []float64{3}, []float64{4, 0})
	if n != 5 || a[0] != 1.5 || b[0] != 2 || b[1] != 0 {
		t.Errorf("clip to 2.5: %v %v norm %g", a, b, n)
	}
	// Under the limit gradients pass unchanged, bit for bit.
	a, b, n = run(10, []float64{0.1}, []float64{0.2, 0.3})
	if a[0] != 0.1 || b[0] != 0.2 || b[1] != 0.3 || !near(n, math.Sqrt(0.14), 1e-15) {
		t.Errorf("under limit: %v %v norm %g", a, b, n)
	}
	// maxNorm 0 only measures.
	a, _, n = run(0, []float64{30}, []float64{40, 0})
	if a[0] != 30 || n != 50 {
		t.Errorf("measure only: %v norm %g", a, n)
	}
}

func TestOptimizerOptionsValidate(t *testing.T) {
	if err := config.DefaultOptimizerOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		edit func(*config.OptimizerOptions)
		want string
	}{
		{func(o *config.OptimizerOptions) { o.LR = 0 }, "lr"},
		{func(o *config.OptimizerOptions) { o.LR = math.Inf(1) }, "lr"},
		{func(o *config.OptimizerOptions) { o.Beta1 = 1 }, "beta1"},
		{func(o *config.OptimizerOptions) { o.Beta2 = -0.1 }, "beta2"},
		{func(o *config.OptimizerOptions) { o.Epsilon = 0 }, "epsilon"},
		{func(o *config.OptimizerOptions) { o.WeightDecay = -1 }, "weight_decay"},
		{func(o *config.OptimizerOptions) { o.ClipNorm = math.NaN() }, "clip_norm"},
		{func(o *config.OptimizerOptions) { o.Schedule = "linear" }, `schedule "linear"`},
		{func(o *config.OptimizerOptions) {
			o.Schedule, o.WarmupSteps, o.TotalSteps = config.ScheduleCosine, 5, 5
		}, "total_steps"},
		{func(o *config.OptimizerOptions) { o.MinLR = 1 }, "min_lr"},
		{func(o *config.OptimizerOptions) { o.WarmupSteps = -1 }, "warmup_steps"},
	}
	for _, c := range bad {
		o := config.DefaultOptimizerOptions()
		c.edit(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want error about %s, got %v", c.want, err)
		}
		if _, err := NewOptimizer(o); err == nil {
			t.Errorf("NewOptimizer accepted invalid options (%s)", c.want)
		}
	}
}
