package grpo

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego"
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/bicot-rl/bicot/pkg/config"
)

// backend is the pure-Go backend with ops run one after another: gomlx v0.26's parallel op
// scheduling (its default when one graph runs alone) races on buffer reuse under -race
// (simplego exec.go: input ownership is decided outside the lock), which could corrupt results.
func backend(t testing.TB) backends.Backend {
	t.Helper()
	b, err := backends.NewWithConfig("go:parallelism=-1,ops_sequential")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// batch is a loss input in plain Go: [B][T] slices, float64.
type batch struct {
	planLogp, planOld, planRef, planMask     [][]float64
	imageLogp, imageOld, imageRef, imageMask [][]float64
	adv                                      []float64
}

func t2(x [][]float64) *tensors.Tensor { return tensors.FromValue(x) }

// lossResult holds the scalars and the gradients w.r.t. plan and image logp.
type lossResult struct {
	loss, kl, planKL, imageKL, ratio, clip, tokens float64
	gradPlan, gradImage                            [][]float64
}

// evalLoss runs Loss on the pure-Go backend.
func evalLoss(t *testing.T, b batch, o config.LossOptions) lossResult {
	t.Helper()
	exec, err := NewExecAny(backend(t), func(in []*Node) []*Node {
		out := Loss(LossInputs{
			PlanLogp: in[0], PlanOld: in[1], PlanRef: in[2], PlanMask: in[3],
			ImageLogp: in[4], ImageOld: in[5], ImageRef: in[6], ImageMask: in[7],
			Advantages: in[8],
		}, o)
		grads := Gradient(out.Loss, in[0], in[4])
		return []*Node{out.Loss, out.MeanKL, out.PlanKL, out.ImageKL, out.MeanRatio, out.ClipFraction, out.Tokens, grads[0], grads[1]}
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := exec.Exec(t2(b.planLogp), t2(b.planOld), t2(b.planRef), t2(b.planMask),
		t2(b.imageLogp), t2(b.imageOld), t2(b.imageRef), t2(b.imageMask), tensors.FromValue(b.adv))
	if err != nil {
		t.Fatal(err)
	}
	s := func(i int) float64 { return res[i].Value().(float64) }
	return lossResult{
		loss: s(0), kl: s(1), planKL: s(2), imageKL: s(3), ratio: s(4), clip: s(5), tokens: s(6),
		gradPlan: res[7].Value().([][]float64), gradImage: res[8].Value().([][]float64),
	}
}

func fill(rows, cols int, v float64) [][]float64 {
	out := make([][]float64, rows)
	for i := range out {
		out[i] = make([]float64, cols)
		for j := range out[i] {
			out[i][j] = v
		}
	}
	return out
}

// onPolicy: logp == old == ref, two samples with A = [1, -0.5]; sample 0 has 2 plan + 3 image
// tokens, sample 1 has 1 plan + 2 image tokens.
func onPolicy() batch {
	lp := [][]float64{{-0.7, -1.2}, {-0.3, -2}}
	li := [][]float64{{-1, -0.5, -2.5}, {-0.1, -1.5, -9}}
	return batch{
		planLogp: lp, planOld: lp, planRef: lp, planMask: [][]float64{{1, 1}, {1, 0}},
		imageLogp: li, imageOld: li, imageRef: li, imageMask: [][]float64{{1, 1, 1}, {1, 1, 0}},
		adv: []float64{1, -0.5},
	}
}

func TestLossOnPolicyByHand(t *testing.T) {
	// Every token's loss is -A: ratio 1, KL 0.
	cases := []struct {
		norm  config.Normalization
		level config.Level
		want  float64
	}{
		// 5 tokens at -1 and 3 at +0.5 over 8 tokens.
		{config.NormTokenMean, config.LevelBoth, -(5*1 - 3*0.5) / 8.0},
		// Sample means -1 and +0.5, averaged.
		{config.NormSequenceMean, config.LevelBoth, -(1 - 0.5) / 2},
		// Plan: (-1 -1 +0.5)/3 = -0.5; image: (-1 -1 -1 +0.5 +0.5)/5 = -0.4; mean -0.45.
		{config.NormLevelMean, config.LevelBoth, -0.45},
		{config.NormTokenMean, config.LevelPlan, -0.5},
		{config.NormTokenMean, config.LevelImage, -0.4},
		{config.NormSequenceMean, config.LevelPlan, -(1 - 0.5) / 2},
		{config.NormLevelMean, config.LevelImage, -0.4},
	}
	for _, c := range cases {
		o := config.DefaultLossOptions()
		o.Norm, o.Level = c.norm, c.level
		r := evalLoss(t, onPolicy(), o)
		if !near(r.loss, c.want, 1e-12) {
			t.Errorf("%s/%s: loss %.15g, want %.15g", c.norm, c.level, r.loss, c.want)
		}
		if r.kl != 0 || r.ratio != 1 || r.clip != 0 {
			t.Errorf("%s/%s: kl %g ratio %g clip %g, want 0, 1, 0", c.norm, c.level, r.kl, r.ratio, r.clip)
		}
	}
}

func TestLossGradientOnPolicy(t *testing.T) {
	// d/dlogp of -exp(logp-old)*A / N is -A/N at ratio 1 (KL has zero gradient at ref == logp).
	o := config.DefaultLossOptions()
	r := evalLoss(t, onPolicy(), o)
	wantPlan := [][]float64{{-1.0 / 8, -1.0 / 8}, {0.5 / 8, 0}}
	wantImage := [][]float64{{-1.0 / 8, -1.0 / 8, -1.0 / 8}, {0.5 / 8, 0.5 / 8, 0}}
	for i := range wantPlan {
		for j := range wantPlan[i] {
			if !near(r.gradPlan[i][j], wantPlan[i][j], 1e-12) {
				t.Errorf("plan grad[%d][%d] = %g, want %g", i, j, r.gradPlan[i][j], wantPlan[i][j])
			}
		}
		for j := range wantImage[i] {
			if !near(r.gradImage[i][j], wantImage[i][j], 1e-12) {
				t.Errorf("image grad[%d][%d] = %g, want %g", i, j, r.gradImage[i][j], wantImage[i][j])
			}
		}
	}
}

func TestLevelSwitchZeroesOtherLevel(t *testing.T) {
	for _, lvl := range []config.Level{config.LevelPlan, config.LevelImage} {
		o := config.DefaultLossOptions()
		o.Level = lvl
		b := onPolicy()
		// Make the switched-off level wildly different: it must not matter.
		r1 := evalLoss(t, b, o)
		if lvl == config.LevelPlan {
			b.imageRef = fill(2, 3, -5)
			b.imageOld = fill(2, 3, -3)
		} else {
			b.planRef = fill(2, 2, -5)
			b.planOld = fill(2, 2, -3)
		}
		r2 := evalLoss(t, b, o)
		if r1.loss != r2.loss {
			t.Errorf("level %s: loss moved with the other level: %g vs %g", lvl, r1.loss, r2.loss)
		}
		other := r2.gradImage
		if lvl == config.LevelImage {
			other = r2.gradPlan
		}
		for _, row := range other {
			for _, g := range row {
				if g != 0 {
					t.Errorf("level %s: gradient reaches the switched-off level: %v", lvl, other)
				}
			}
		}
		wantTokens := 3.0
		if lvl == config.LevelImage {
			wantTokens = 5
		}
		if r2.tokens != wantTokens {
			t.Errorf("level %s: tokens %g, want %g", lvl, r2.tokens, wantTokens)
		}
	}
}

// one builds a one-sample batch with a single image token and no plan tokens (masked out).
func one(logp, old, ref, adv float64) batch {
	return batch{
		planLogp: [][]float64{{0}}, planOld: [][]float64{{0}}, planRef: [][]float64{{0}}, planMask: [][]float64{{0}},
		imageLogp: [][]float64{{logp}}, imageOld: [][]float64{{old}}, imageRef: [][]float64{{ref}}, imageMask: [][]float64{{1}},
		adv: []float64{adv},
	}
}

func TestKLByHand(t *testing.T) {
	// ref - logp = -1: KL = e^-1 - (-1) - 1 = e^-1. Loss = -(1*0.5 - 0.1*e^-1).
	o := config.DefaultLossOptions()
	o.Beta = 0.1
	r := evalLoss(t, one(-1, -1, -2, 0.5), o)
	if !near(r.kl, math.Exp(-1), 1e-15) || !near(r.imageKL, math.Exp(-1), 1e-15) || r.planKL != 0 {
		t.Errorf("KL = %g (image %g, plan %g), want e^-1", r.kl, r.imageKL, r.planKL)
	}
	if want := -(0.5 - 0.1*math.Exp(-1)); !near(r.loss, want, 1e-15) {
		t.Errorf("loss %.15g, want %.15g", r.loss, want)
	}
	// Gradient: d/dlogp [-r*A + beta*(e^(ref-logp) - (ref-logp) - 1)] = -A + beta*(1 - e^(ref-logp)).
	if want := -0.5 + 0.1*(1-math.Exp(-1)); !near(r.gradImage[0][0], want, 1e-15) {
		t.Errorf("grad %.15g, want %.15g", r.gradImage[0][0], want)
	}
	// KL is zero exactly when ref == logp, whatever the value.
	r = evalLoss(t, one(-3.7, -3.7, -3.7, 2), o)
	if r.kl != 0 || r.loss != -2 {
		t.Errorf("ref == logp: kl %g loss %g, want 0 and -2", r.kl, r.loss)
	}
}

func TestClippingByHand(t *testing.T) {
	o := config.DefaultLossOptions()
	o.Beta = 0
	o.Clip = true
	o.EpsLow, o.EpsHigh = 0.2, 0.28
	up, down := math.Exp(0.5), math.Exp(-0.5) // ratios 1.6487, 0.6065
	cases := []struct {
		name          string
		logp, old, a  float64
		loss, clip    float64
		gradientZeros bool
	}{
		{"high ratio positive A clips", -1, -1.5, 1, -1.28, 1, true},
		{"high ratio negative A keeps", -1, -1.5, -1, up, 0, false},
		{"low ratio negative A clips", -1.5, -1, -1, 0.8, 1, true},
		{"low ratio positive A keeps", -1.5, -1, 1, -down, 0, false},
		{"inside range", -1, -1.1, 1, -math.Exp(0.1), 0, false},
	}
	for _, c := range cases {
		r := evalLoss(t, one(c.logp, c.old, c.logp, c.a), o)
		if !near(r.loss, c.loss, 1e-12) || r.clip != c.clip {
			t.Errorf("%s: loss %.12g clip %g, want %.12g and %g", c.name, r.loss, r.clip, c.loss, c.clip)
		}
		if g := r.gradImage[0][0]; (g == 0) != c.gradientZeros {
			t.Errorf("%s: gradient %g, want zero=%v", c.name, g, c.gradientZeros)
		}
		if !near(r.ratio, math.Exp(c.logp-c.old), 1e-12) {
			t.Errorf("%s: mean ratio %g", c.name, r.ratio)
		}
	}
	// Without clipping the same stale sample is not bounded.
	o.Clip = false
	if r := evalLoss(t, one(-1, -1.5, -1, 1), o); !near(r.loss, -up, 1e-12) || r.clip != 0 {
		t.Errorf("unclipped: loss %g clip %g", r.loss, r.clip)
	}
}

// referenceLoss is the loss written out token by token, for random batches.
func referenceLoss(b batch, o config.LossOptions) float64 {
	type lv struct{ lp, old, ref, m [][]float64 }
	var lvs []lv
	if o.Level != config.LevelImage {
		lvs = append(lvs, lv{b.planLogp, b.planOld, b.planRef, b.planMask})
	}
	if o.Level != config.LevelPlan {
		lvs = append(lvs, lv{b.imageLogp, b.imageOld, b.imageRef, b.imageMask})
	}
	tok := func(l lv, i, j int) float64 {
		r := math.Exp(l.lp[i][j] - l.old[i][j])
		s := r * b.adv[i]
		if o.Clip {
			s = math.Min(s, math.Max(1-o.EpsLow, math.Min(1+o.EpsHigh, r))*b.adv[i])
		}
		d := l.ref[i][j] - l.lp[i][j]
		return -(s - o.Beta*(math.Exp(d)-d-1))
	}
	var total, n float64
	seqSum := make([]float64, len(b.adv))
	seqN := make([]float64, len(b.adv))
	var levelMeans []float64
	for _, l := range lvs {
		var ls, ln float64
		for i := range l.m {
			for j := range l.m[i] {
				if l.m[i][j] != 0 {
					x := tok(l, i, j)
					total, n, ls, ln = total+x, n+1, ls+x, ln+1
					seqSum[i] += x
					seqN[i]++
				}
			}
		}
		if ln > 0 {
			levelMeans = append(levelMeans, ls/ln)
		}
	}
	switch o.Norm {
	case config.NormSequenceMean:
		var s, k float64
		for i := range seqSum {
			if seqN[i] > 0 {
				s += seqSum[i] / seqN[i]
				k++
			}
		}
		return s / k
	case config.NormLevelMean:
		var s float64
		for _, m := range levelMeans {
			s += m
		}
		return s / float64(len(levelMeans))
	}
	return total / n
}

func TestLossMatchesReferenceOnRandomBatches(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	rnd := func(rows, cols int, lo, hi float64) [][]float64 {
		out := fill(rows, cols, 0)
		for i := range out {
			for j := range out[i] {
				out[i][j] = lo + (hi-lo)*r.Float64()
			}
		}
		return out
	}
	mask := func(rows, cols int) [][]float64 {
		out := fill(rows, cols, 0)
		for i := range out {
			n := r.IntN(cols + 1) // some rows fully masked
			for j := 0; j < n; j++ {
				out[i][j] = 1
			}
		}
		return out
	}
	for trial := range 6 {
		const B, Tp, Ti = 4, 5, 9
		b := batch{
			planLogp: rnd(B, Tp, -4, -0.01), planOld: rnd(B, Tp, -4, -0.01), planRef: rnd(B, Tp, -4, -0.01), planMask: mask(B, Tp),
			imageLogp: rnd(B, Ti, -4, -0.01), imageOld: rnd(B, Ti, -4, -0.01), imageRef: rnd(B, Ti, -4, -0.01), imageMask: mask(B, Ti),
			adv: []float64{1.2, -0.4, 0.05, -0.85},
		}
		b.imageMask[0][0] = 1 // never an empty batch
		b.planMask[0][0] = 1
		for _, norm := range []config.Normalization{config.NormTokenMean, config.NormSequenceMean, config.NormLevelMean} {
			for _, lvl := range []config.Level{config.LevelBoth, config.LevelPlan, config.LevelImage} {
				o := config.LossOptions{Beta: 0.04, Clip: trial%2 == 1, EpsLow: 0.2, EpsHigh: 0.28, Norm: norm, Level: lvl}
				got := evalLoss(t, b, o).loss
				want := referenceLoss(b, o)
				if !near(got, want, 1e-10) {
					t.Errorf("trial %d %s/%s clip=%v: loss %.12g, reference %.12g", trial, norm, lvl, o.Clip, got, want)
				}
			}
		}
	}
}

func TestMaskedPositionsCannotPoison(t *testing.T) {
	b := onPolicy()
	// Padding holding -Inf / NaN (as a model may emit past the end) must not reach the loss.
	b.imageLogp = [][]float64{{-1, -0.5, -2.5}, {-0.1, -1.5, math.Inf(-1)}}
	b.imageOld = [][]float64{{-1, -0.5, -2.5}, {-0.1, -1.5, math.NaN()}}
	b.imageRef = b.imageOld
	r := evalLoss(t, b, config.DefaultLossOptions())
	if !near(r.loss, -(5*1-3*0.5)/8.0, 1e-12) {
		t.Fatalf("loss %g with poisoned padding", r.loss)
	}
	for _, row := range append(r.gradImage, r.gradPlan...) {
		for _, g := range row {
			if math.IsNaN(g) || math.IsInf(g, 0) {
				t.Fatalf("non-finite gradient %v", r.gradImage)
			}
		}
	}
}

func TestLossBoolMasksAndImageOnlyBatch(t *testing.T) {
	exec, err := NewExecAny(backend(t), func(in []*Node) []*Node {
		out := Loss(LossInputs{ImageLogp: in[0], ImageOld: in[0], ImageRef: in[0], ImageMask: in[1], Advantages: in[2]}, config.DefaultLossOptions())
		return []*Node{out.Loss, out.PlanKL}
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := exec.Exec(tensors.FromValue([][]float32{{-1, -2}, {-3, -4}}), tensors.FromValue([][]bool{{true, false}, {true, true}}), tensors.FromValue([]float32{2, -1}))
	if err != nil {
		t.Fatal(err)
	}
	// Tokens: -2 (sample 0), +1, +1 (sample 1): mean 0.
	if l := res[0].Value().(float32); l != 0 || res[1].Value().(float32) != 0 {
		t.Fatalf("loss %g plan KL %v, want 0, 0", l, res[1].Value())
	}
}

func TestLossShapeErrors(t *testing.T) {
	exec, err := NewExecAny(backend(t), func(in []*Node) []*Node {
		return []*Node{Loss(LossInputs{ImageLogp: in[0], ImageOld: in[0], ImageRef: in[0], ImageMask: in[1], Advantages: in[2]}, config.DefaultLossOptions()).Loss}
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = exec.Exec(tensors.FromValue([][]float32{{-1, -2}}), tensors.FromValue([][]float32{{1, 1, 1}}), tensors.FromValue([]float32{1}))
	if err == nil || !strings.Contains(err.Error(), "image mask shape") {
		t.Fatalf("mismatched mask: %v", err)
	}
	_, err = exec.Exec(tensors.FromValue([][]float32{{-1, -2}}), tensors.FromValue([][]float32{{1, 1}}), tensors.FromValue([]float32{1, 2}))
	if err == nil || !strings.Contains(err.Error(), "advantages") {
		t.Fatalf("mismatched advantages: %v", err)
	}
}

func TestLossOptionsValidate(t *testing.T) {
	if err := config.DefaultLossOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		edit func(*config.LossOptions)
		want string
	}{
		{func(o *config.LossOptions) { o.Beta = -1 }, "beta"},
		{func(o *config.LossOptions) { o.Beta = math.NaN() }, "beta"},
		{func(o *config.LossOptions) { o.Clip, o.EpsLow = true, 1 }, "eps_low"},
		{func(o *config.LossOptions) { o.Clip, o.EpsHigh = true, 0 }, "eps_high"},
		{func(o *config.LossOptions) { o.Norm = "mean" }, `norm "mean"`},
		{func(o *config.LossOptions) { o.Level = "text" }, `level "text"`},
	}
	for _, c := range bad {
		o := config.DefaultLossOptions()
		c.edit(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want error about %s, got %v", c.want, err)
		}
	}
}
