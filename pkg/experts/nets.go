package experts

import (
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph code reads as math
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/layers"
	"github.com/gomlx/gomlx/pkg/ml/layers/activations"

	"github.com/bicot-rl/bicot/pkg/mlx"
)

// The four networks. Every one starts from a cell encoder: each 8x8x3 patch through two dense
// layers, optionally plus a learned embedding of the cell's position (the detector and VQA are
// position-free; the alignment and preference models need positions for relations).

const (
	hidden     = 64
	attnDim    = 32
	wordDim    = 16
	wordWindow = 5
	numAttrs   = 5 + 6 + 2 + 4 // shape, colour, size, texture classes
)

var f32 = dtypes.Float32

// cellEncoder maps patches [N, NumCells, PatchDim] to cell features [N, NumCells, hidden].
func cellEncoder(ctx *context.Context, patches *Node, withPos bool) *Node {
	n := patches.Shape().Dimensions[0]
	h := activations.Relu(mlx.Dense(ctx.In("enc1"), Reshape(patches, n*NumCells, PatchDim), true, hidden))
	h = Reshape(h, n, NumCells, hidden)
	if withPos {
		pos := ctx.In("pos").VariableWithShape("embed", shapes.Make(f32, NumCells, hidden)).ValueGraph(patches.Graph())
		h = Add(h, InsertAxes(pos, 0))
	}
	h = activations.Relu(mlx.Dense(ctx.In("enc2"), Reshape(h, n*NumCells, hidden), true, hidden))
	return Reshape(h, n, NumCells, hidden)
}

// detectorHeads returns per-cell logits: objectness [N, C] and the four attribute classes
// [N, C, k].
func detectorHeads(ctx *context.Context, patches *Node) (obj, shape, colour, size, texture *Node) {
	n := patches.Shape().Dimensions[0]
	e := Reshape(cellEncoder(ctx, patches, false), n*NumCells, hidden)
	head := func(name string, k int) *Node {
		return Reshape(mlx.Dense(ctx.In(name), e, true, k), n, NumCells, k)
	}
	obj = Reshape(head("obj", 1), n, NumCells)
	return obj, head("shape", 5), head("colour", 6), head("size", 2), head("texture", 4)
}

// condition combines cell features e [N, C, H] with a conditioning vector c [N, H] into
// [N*C, H]: a dense layer over (e, c, e*c), so that cells can be matched against the condition.
func condition(ctx *context.Context, e, c *Node) *Node {
	n := e.Shape().Dimensions[0]
	cb := BroadcastToDims(InsertAxes(c, 1), n, NumCells, hidden)
	z := Concatenate([]*Node{e, cb, Mul(e, cb)}, -1)
	return activations.Relu(mlx.Dense(ctx.In("cond"), Reshape(z, n*NumCells, 3*hidden), true, hidden))
}

// vqaLogit answers a question (attribute multi-hot q [N, numAttrs]) about the image: per-cell
// match logits pooled by log-sum-exp, a soft "some cell matches".
func vqaLogit(ctx *context.Context, patches, q *Node) *Node {
	n := patches.Shape().Dimensions[0]
	e := cellEncoder(ctx, patches, false)
	qv := activations.Relu(mlx.Dense(ctx.In("question"), q, true, hidden))
	l := Reshape(mlx.Dense(ctx.In("match"), condition(ctx, e, qv), true, 1), n, NumCells)
	m := StopGradient(ReduceMax(l, 1))
	return Add(m, Log(ReduceSum(Exp(Sub(l, InsertAxes(m, 1))), 1)))
}

// pairLogit scores an (image, prompt) pair with a small cross-attention from words to cells.
// Each word is read with its neighbours (window ids [N, MaxWords, wordWindow], gathered on the host,
// so "red" binds to "circle" without a sequence model) and its position in the prompt; it attends
// over the cells to collect the evidence for it, and counts the cells that fit it (a sum of
// sigmoids, so "three circles" can be checked). Per-word verdicts are averaged over the prompt's
// words (mask [N, MaxWords]) and combined with a summary of the whole image (for quality).
func pairLogit(ctx *context.Context, patches, windows, mask *Node, vocabSize int) *Node {
	g := patches.Graph()
	n := patches.Shape().Dimensions[0]
	e := cellEncoder(ctx, patches, true) // [n, C, hidden]
	w := layers.Embedding(ctx.In("words"), Reshape(windows, n*MaxWords, wordWindow), f32, vocabSize, wordDim)
	w = Reshape(w, n*MaxWords, wordWindow*wordDim)
	w = activations.Relu(mlx.Dense(ctx.In("word_ctx"), w, true, hidden))
	wpos := ctx.In("word_pos").VariableWithShape("embed", shapes.Make(f32, MaxWords, hidden)).ValueGraph(g)
	w = Add(Reshape(w, n, MaxWords, hidden), InsertAxes(wpos, 0)) // [n, L, hidden]

	q := mlx.Dense(ctx.In("query"), w, false, attnDim)                                     // [n, L, a]
	k := mlx.Dense(ctx.In("key"), e, false, attnDim)                                       // [n, C, a]
	m := MulScalar(mlx.BatchMatMul(q, TransposeAllAxes(k, 0, 2, 1)), 1/math.Sqrt(attnDim)) // [n, L, C]
	v := mlx.BatchMatMul(Softmax(m, -1), e)                                                // [n, L, hidden]
	cnt := ReduceSum(Sigmoid(m), -1)                                                       // [n, L]
	z := Concatenate([]*Node{w, v, Mul(w, v), InsertAxes(cnt, -1)}, -1)                    // [n, L, 3*hidden+1]
	r := activations.Relu(mlx.Dense(ctx.In("verdict"), Reshape(z, n*MaxWords, 3*hidden+1), true, hidden))
	r = Reshape(r, n, MaxWords, hidden)
	msum := Max(ReduceSum(mask, -1), ScalarOne(g, f32))
	pooled := Div(ReduceSum(Mul(r, InsertAxes(mask, -1)), 1), InsertAxes(msum, -1)) // [n, hidden]
	img := MulScalar(ReduceSum(e, 1), 1.0/4)                                        // [n, hidden]
	h := activations.Relu(mlx.Dense(ctx.In("head1"), Concatenate([]*Node{pooled, img}, -1), true, hidden))
	return Reshape(mlx.Dense(ctx.In("head2"), h, true, 1), n)
}

// bceLogits is the mean binary cross-entropy of logits against 0/1 labels.
func bceLogits(logits, labels *Node) *Node {
	return ReduceAllMean(Sub(Softplus(logits), Mul(labels, logits)))
}

// maskedCE is the cross-entropy of logits [N, C, k] against class ids [N, C] over cells where
// mask [N, C] is 1.
func maskedCE(logits, classes, mask *Node) *Node {
	k := logits.Shape().Dimensions[2]
	nll := Neg(ReduceSum(Mul(LogSoftmax(logits, -1), OneHot(classes, k, f32)), -1))
	return Div(ReduceAllSum(Mul(nll, mask)), Max(ReduceAllSum(mask), ScalarOne(mask.Graph(), f32)))
}
