package mlx

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/context/initializers"
)

func testBackend(t *testing.T) backends.Backend {
	t.Helper()
	b, err := NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randTensor(r *rand.Rand, dims ...int) *tensors.Tensor {
	n := 1
	for _, d := range dims {
		n *= d
	}
	v := make([]float64, n)
	for i := range v {
		v[i] = r.NormFloat64()
	}
	return tensors.FromFlatDataAndDimensions(v, dims...)
}

func maxAbsDiff(t *testing.T, a, b *tensors.Tensor) float64 {
	t.Helper()
	if !a.Shape().Equal(b.Shape()) {
		t.Fatalf("shapes differ: %s vs %s", a.Shape(), b.Shape())
	}
	x, y := tensors.MustCopyFlatData[float64](a), tensors.MustCopyFlatData[float64](b)
	m := 0.0
	for i := range x {
		m = math.Max(m, math.Abs(x[i]-y[i]))
	}
	return m
}

// The custom matmul gradient must equal the library's own (slow) gradient of DotGeneral.
func TestBatchMatMulGradientMatchesLibrary(t *testing.T) {
	backend := testBackend(t)
	r := rand.New(rand.NewPCG(1, 2))
	a, b, w := randTensor(r, 2, 3, 4), randTensor(r, 2, 4, 5), randTensor(r, 2, 3, 5)
	grads := func(fast bool) []*tensors.Tensor {
		return MustExecOnceN(backend, func(a, b, w *Node) []*Node {
			var y *Node
			if fast {
				y = BatchMatMul(a, b)
			} else {
				y = Einsum("bmk,bkn->bmn", a, b)
			}
			// A non-linear loss so the adjoint differs per element.
			loss := ReduceAllSum(Mul(Tanh(y), w))
			g := Gradient(loss, a, b)
			return []*Node{y, g[0], g[1]}
		}, a, b, w)
	}
	fast, lib := grads(true), grads(false)
	for i, name := range []string{"product", "grad a", "grad b"} {
		if d := maxAbsDiff(t, fast[i], lib[i]); d > 1e-10 {
			t.Errorf("%s: max |diff| %g", name, d)
		}
	}
}

// Dense and CausalSelfAttention on 3-D input: gradients with respect to the input and every
// variable equal those of the same math built from library ops (Einsum, whose gradient is the
// library's).
func TestAttentionGradientsMatchLibrary(t *testing.T) {
	backend := testBackend(t)
	const B, T, D, H = 2, 5, 8, 2
	dh := D / H
	r := rand.New(rand.NewPCG(3, 4))
	x, w := randTensor(r, B, T, D), randTensor(r, B, T, D)
	ctx := context.New()
	ctx = ctx.WithInitializer(initializers.RandomNormalFn(ctx, 0.5))
	ctx.SetRNGStateFromSeed(7)

	libDense := func(ctx *context.Context, x *Node, outDims ...int) *Node {
		ctx = ctx.In("dense")
		g := x.Graph()
		wv := ctx.GetVariableByScopeAndName(ctx.Scope(), "weights").ValueGraph(g)
		bv := ctx.GetVariableByScopeAndName(ctx.Scope(), "biases").ValueGraph(g)
		y := Einsum("btd,de->bte", x, Reshape(wv, D, -1))
		y = Add(y, Reshape(bv, 1, 1, -1))
		return Reshape(y, append([]int{B, T}, outDims...)...)
	}
	libAttention := func(ctx *context.Context, x *Node) *Node {
		g := x.Graph()
		q := MulScalar(libDense(ctx.In("query"), x, H, dh), 1/math.Sqrt(float64(dh)))
		k := libDense(ctx.In("key"), x, H, dh)
		v := libDense(ctx.In("value"), x, H, dh)
		s := Einsum("bqhd,bkhd->bhqk", q, k)
		mask := BroadcastToDims(Reshape(LowerTriangular(g, T), 1, 1, T, T), B, H, T, T)
		att := MaskedSoftmax(s, mask, -1)
		o := Reshape(Einsum("bhqk,bkhd->bqhd", att, v), B, T, D)
		return libDense(ctx.In("output"), o, D)
	}
	run := func(fast bool) []*tensors.Tensor {
		return context.MustExecOnceN(backend, ctx, func(ctx *context.Context, x, w *Node) []*Node {
			var y *Node
			if fast {
				y = CausalSelfAttention(ctx.In("attn"), x, H, dh)
			} else {
				y = libAttention(ctx.In("attn").Reuse(), x)
			}
			loss := ReduceAllSum(Mul(Tanh(y), w))
			nodes := []*Node{x}
			var vars []*context.Variable
			for v := range ctx.IterVariables() {
				if v.DType() == dtypes.Float64 {
					vars = append(vars, v)
				}
			}
			sort.Slice(vars, func(i, j int) bool { return vars[i].ScopeAndName() < vars[j].ScopeAndName() })
			for _, v := range vars {
				nodes = append(nodes, v.ValueGraph(x.Graph()))
			}
			return append([]*Node{y}, Gradient(loss, nodes...)...)
		}, x, w)
	}
	// Variables are created (float64, like the inputs) by the fast version first.
	fast := run(true)
	lib := run(false)
	if len(fast) != len(lib) || len(fast) < 2+8 {
		t.Fatalf("got %d and %d outputs", len(fast), len(lib))
	}
	for i := range fast {
		if d := maxAbsDiff(t, fast[i], lib[i]); d > 1e-9 {
			t.Errorf("output %d: max |diff| %g", i, d)
		}
	}
}

// The cached single-position step reproduces full causal attention position by position.
func TestCachedAttentionStepMatchesFull(t *testing.T) {
	backend := testBackend(t)
	const N, T, D, H = 3, 6, 8, 2
	dh := D / H
	r := rand.New(rand.NewPCG(5, 6))
	x := randTensor(r, N, T, D)
	ctx := context.New()
	ctx = ctx.WithInitializer(initializers.RandomNormalFn(ctx, 0.5))
	ctx = ctx.Checked(false)
	ctx.SetRNGStateFromSeed(9)
	full := context.MustExecOnceN(backend, ctx, func(ctx *context.Context, x *Node) *Node {
		return CausalSelfAttention(ctx, x, H, dh)
	}, x)[0]
	fullData := tensors.MustCopyFlatData[float64](full)
	kd, vd := CacheShapes(N, H, T, dh)
	kc, vc := make([]float64, N*T*H*dh), make([]float64, N*T*H*dh)
	// Entries at positions >= pos must not matter: fill them with garbage.
	for i := range kc {
		kc[i], vc[i] = 1e3, -1e3
	}
	xs := tensors.MustCopyFlatData[float64](x)
	stepExec := context.MustNewExec(backend, ctx, func(ctx *context.Context, xt, pos, k, v *Node) []*Node {
		o, k2, v2 := CachedAttentionStep(ctx, xt, pos, k, v, H, dh)
		return []*Node{o, k2, v2}
	})
	for p := 0; p < T; p++ {
		xt := make([]float64, N*D)
		for n := 0; n < N; n++ {
			copy(xt[n*D:(n+1)*D], xs[(n*T+p)*D:(n*T+p+1)*D])
		}
		out := stepExec.MustExec(tensors.FromFlatDataAndDimensions(xt, N, D), int32(p),
			tensors.FromFlatDataAndDimensions(kc, kd...), tensors.FromFlatDataAndDimensions(vc, vd...))
		WriteCaches(kc, vc, tensors.MustCopyFlatData[float64](out[1]), tensors.MustCopyFlatData[float64](out[2]), N, H, T, dh, p)
		o := tensors.MustCopyFlatData[float64](out[0])
		for n := 0; n < N; n++ {
			for d := 0; d < D; d++ {
				if diff := math.Abs(o[n*D+d] - fullData[(n*T+p)*D+d]); diff > 1e-9 {
					t.Fatalf("position %d row %d dim %d: |diff| %g", p, n, d, diff)
				}
			}
		}
	}
}

// GatherAxis selects like Slice and, unlike Slice on this backend, has a gradient.
func TestGatherAxis(t *testing.T) {
	backend := testBackend(t)
	r := rand.New(rand.NewPCG(7, 8))
	x := randTensor(r, 2, 5, 3)
	out := MustExecOnceN(backend, func(x *Node) []*Node {
		y := GatherAxis(x, 1, Range(1, 4))
		ref := Slice(x, AxisRange(), AxisRange(1, 4))
		g := Gradient(ReduceAllSum(MulScalar(y, 2)), x)[0]
		return []*Node{y, ref, g}
	}, x)
	if d := maxAbsDiff(t, out[0], out[1]); d != 0 {
		t.Errorf("GatherAxis differs from Slice by %g", d)
	}
	g := tensors.MustCopyFlatData[float64](out[2])
	for i, v := range g {
		want := 0.0
		if p := (i / 3) % 5; p >= 1 && p < 4 {
			want = 2
		}
		if v != want {
			t.Fatalf("gradient[%d] = %g, want %g", i, v, want)
		}
	}
}

func TestNewBackendErrors(t *testing.T) {
	if _, err := NewBackend("nosuch:thing"); err == nil {
		t.Fatal("unknown backend accepted")
	}
}
