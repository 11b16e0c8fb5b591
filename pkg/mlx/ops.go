package mlx

import (
	"fmt"
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph code reads as math
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// BatchMatMul computes a[..., m, k] x b[..., k, n] -> [..., m, n]; the leading axes are batch
// axes and must match.
//
// Its gradient is the textbook pair of matmuls, ga = v x b^T and gb = a^T x v, instead of
// v0.26's broadcast-multiply + sum. The forward product sees gradient-stopped inputs; two
// IdentityWithCustomGradient "carriers" of a and b receive the gradients. Reverse autodiff visits
// nodes by decreasing id, so the identity that captures the output adjoint v (created last) runs
// before the carriers (created earlier) read it. The carriers join the output through a
// zero-valued scalar so that autodiff reaches them.
func BatchMatMul(a, b *Node) *Node {
	r := a.Rank()
	if r < 2 || b.Rank() != r {
		panic(fmt.Sprintf("mlx.BatchMatMul: want equal ranks >= 2, got %s x %s", a.Shape(), b.Shape()))
	}
	batch := make([]int, r-2)
	for i := range batch {
		batch[i] = i
	}
	mAx, kAx := r-2, r-1
	y := DotGeneral(StopGradient(a), []int{kAx}, batch, StopGradient(b), []int{mAx}, batch) // [..., m, n]
	var vY *Node
	ca := IdentityWithCustomGradient(a, func(_, _ *Node) *Node {
		if vY == nil {
			return ZerosLike(a)
		}
		// [..., m, n] x [..., k, n] contracting n -> [..., m, k]
		return DotGeneral(vY, []int{kAx}, batch, StopGradient(b), []int{kAx}, batch)
	})
	cb := IdentityWithCustomGradient(b, func(_, _ *Node) *Node {
		if vY == nil {
			return ZerosLike(b)
		}
		// [..., m, k] x [..., m, n] contracting m -> [..., k, n]
		return DotGeneral(StopGradient(a), []int{mAx}, batch, vY, []int{mAx}, batch)
	})
	yI := IdentityWithCustomGradient(y, func(_, v *Node) *Node {
		vY = v
		return v
	})
	zero := MulScalar(Add(ReduceAllSum(ca), ReduceAllSum(cb)), 0)
	return Add(yI, zero)
}

// Dense is a fully connected layer over the last axis of x of any rank >= 1, with the variables
// layers.Dense would create ("dense/weights" [in, outDims...], "dense/biases" [outDims...]). It
// flattens x to 2-D and multiplies with BatchMatMul, so its gradient stays cheap.
func Dense(ctx *context.Context, x *Node, useBias bool, outDims ...int) *Node {
	g := x.Graph()
	ctx = ctx.In("dense")
	inDim := x.Shape().Dimensions[x.Rank()-1]
	out := 1
	for _, d := range outDims {
		out *= d
	}
	wDims := append([]int{inDim}, outDims...)
	w := ctx.VariableWithShape("weights", shapes.Make(x.DType(), wDims...)).ValueGraph(g)
	lead := x.Shape().Dimensions[:x.Rank()-1]
	n := 1
	for _, d := range lead {
		n *= d
	}
	y := BatchMatMul(Reshape(x, n, inDim), Reshape(w, inDim, out)) // [n, out]
	if useBias {
		bias := ctx.VariableWithShape("biases", shapes.Make(x.DType(), outDims...)).ValueGraph(g)
		y = Add(y, Reshape(bias, 1, out))
	}
	return Reshape(y, append(append([]int{}, lead...), outDims...)...)
}

// AttentionProjections computes the query, key and value projections of x [..., D] into heads
// [..., H, dh] (scopes "query", "key", "value"); the query is already scaled by 1/sqrt(dh).
// The full-sequence and the cached single-step attention share them, so both read the same
// variables.
func AttentionProjections(ctx *context.Context, x *Node, heads, headDim int) (q, k, v *Node) {
	q = Dense(ctx.In("query"), x, true, heads, headDim)
	k = Dense(ctx.In("key"), x, true, heads, headDim)
	v = Dense(ctx.In("value"), x, true, heads, headDim)
	q = MulScalar(q, 1/math.Sqrt(float64(headDim)))
	return
}

// CausalSelfAttention is multi-head self-attention over x [B, T, D] where position t sees
// positions <= t, scaled by 1/sqrt(head dim) (layers.MultiHeadAttention in v0.26 scales by
// 1/head dim). The output projection (scope "output") maps back to D.
func CausalSelfAttention(ctx *context.Context, x *Node, heads, headDim int) *Node {
	g := x.Graph()
	B, T, D := x.Shape().Dimensions[0], x.Shape().Dimensions[1], x.Shape().Dimensions[2]
	q, k, v := AttentionProjections(ctx, x, heads, headDim) // [B,T,H,dh]
	qh := TransposeAllAxes(q, 0, 2, 1, 3)                   // [B,H,T,dh]
	kh := TransposeAllAxes(k, 0, 2, 3, 1)                   // [B,H,dh,T]
	vh := TransposeAllAxes(v, 0, 2, 1, 3)                   // [B,H,T,dh]
	scores := BatchMatMul(qh, kh)                           // [B,H,T,T]
	mask := BroadcastToDims(Reshape(LowerTriangular(g, T), 1, 1, T, T), B, heads, T, T)
	att := MaskedSoftmax(scores, mask, -1)
	o := BatchMatMul(att, vh)                                         // [B,H,T,dh]
	o = Reshape(TransposeAllAxes(o, 0, 2, 1, 3), B, T, heads*headDim) // [B,T,H*dh]
	return Dense(ctx.In("output"), o, true, D)
}

// CachedAttentionStep is CausalSelfAttention for one new position per row over a fixed-shape
// key/value cache: x [N, D] is the input at position pos (scalar int32); kCache [N, H, Tmax, dh]
// and vCache [N, H, dh, Tmax] (CacheShapes) hold positions < pos. It returns the attention output
// [N, D] and this position's key and value [N, H, dh], which the caller writes into the caches at
// pos (WriteCaches) before the next step.
//
// Why the write happens outside: the pure-Go backend has no DynamicUpdateSlice, and writing with
// Where on a one-hot position mask costs three cache-sized broadcasts per layer and step (a third
// of the decode time); copying N*H*dh values on the host costs nothing. Cache entries at
// positions >= pos are masked, so whatever they hold does no harm.
//
// It is for sampling only and is never differentiated, so it multiplies with plain DotGeneral
// (BatchMatMul's gradient carriers would cost a pass over the caches). The cache layouts are the
// pure-Go backend's native [batch, cross, contracting] operand layouts for q.K and att.V, so no
// step transposes a cache.
func CachedAttentionStep(ctx *context.Context, x, pos, kCache, vCache *Node, heads, headDim int) (out, k, v *Node) {
	g := x.Graph()
	N, D := x.Shape().Dimensions[0], x.Shape().Dimensions[1]
	Tm := kCache.Shape().Dimensions[2]
	q, k, v := AttentionProjections(ctx, x, heads, headDim) // [N,H,dh]
	qh := Reshape(q, N, heads, 1, headDim)
	past := DotGeneral(qh, []int{3}, []int{0, 1}, kCache, []int{3}, []int{0, 1}) // [N,H,1,T]
	self := Reshape(ReduceSum(Mul(q, k), -1), N, heads, 1, 1)                    // [N,H,1,1]
	scores := Concatenate([]*Node{past, self}, 3)                                // [N,H,1,T+1]
	visible := Concatenate([]*Node{
		LessThan(Iota(g, shapes.Make(dtypes.Int32, Tm), 0), ConvertDType(pos, dtypes.Int32)),
		Const(g, []bool{true}),
	}, 0)
	att := MaskedSoftmax(scores, BroadcastToDims(Reshape(visible, 1, 1, 1, Tm+1), N, heads, 1, Tm+1), -1)
	attPast := Slice(att, AxisRange(), AxisRange(), AxisRange(), AxisRange(0, Tm))
	attSelf := Reshape(Slice(att, AxisRange(), AxisRange(), AxisRange(), AxisRange(Tm, Tm+1)), N, heads, 1)
	o := DotGeneral(attPast, []int{3}, []int{0, 1}, vCache, []int{3}, []int{0, 1}) // [N,H,1,dh]
	o = Add(Reshape(o, N, heads, headDim), Mul(attSelf, v))
	out = Dense(ctx.In("output"), Reshape(o, N, heads*headDim), true, D)
	return out, k, v
}

// CacheShapes are the dimensions of the key and value caches CachedAttentionStep takes.
func CacheShapes(n, heads, maxLen, headDim int) (k, v []int) {
	return []int{n, heads, maxLen, headDim}, []int{n, heads, headDim, maxLen}
}

// WriteCaches stores one position's keys and values [N, H, dh] (flat, as CachedAttentionStep
// returns them) at pos of flat caches laid out as CacheShapes.
func WriteCaches[T any](kCache, vCache, k, v []T, n, heads, maxLen, headDim, pos int) {
	for r := 0; r < n*heads; r++ {
		copy(kCache[(r*maxLen+pos)*headDim:(r*maxLen+pos+1)*headDim], k[r*headDim:(r+1)*headDim])
		base := r * headDim * maxLen
		for d := 0; d < headDim; d++ {
			vCache[base+d*maxLen+pos] = v[r*headDim+d]
		}
	}
}

// OneHotMask is the boolean vector [n] that is true only at index pos (scalar int32 node).
func OneHotMask(g *Graph, n int, pos *Node) *Node {
	return Equal(Iota(g, shapes.Make(dtypes.Int32, n), 0), ConvertDType(pos, dtypes.Int32))
}

// GatherAxis selects the given indices along axis of x, like Slice or a fancy index, but with a
// gradient on the pure-Go backend (Gather's gradient is ScatterSum; Slice's needs Pad).
func GatherAxis(x *Node, axis int, indices []int) *Node {
	r := x.Rank()
	if axis < 0 {
		axis += r
	}
	perm := make([]int, 0, r)
	perm = append(perm, axis)
	for i := 0; i < r; i++ {
		if i != axis {
			perm = append(perm, i)
		}
	}
	idx := make([]int32, len(indices))
	for i, v := range indices {
		idx[i] = int32(v)
	}
	g := x.Graph()
	xt := x
	if axis != 0 {
		xt = TransposeAllAxes(x, perm...)
	}
	y := Gather(xt, Reshape(Const(g, idx), len(idx), 1)) // [len, rest...]
	if axis == 0 {
		return y
	}
	inv := make([]int, r)
	for i, p := range perm {
		inv[p] = i
	}
	return TransposeAllAxes(y, inv...)
}

// Range returns the ints [from, to).
func Range(from, to int) []int {
	out := make([]int, 0, max(0, to-from))
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}
