package model

import (
	"fmt"
	"math"
	"sync"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph code reads as math
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/context/initializers"
	"github.com/gomlx/gomlx/pkg/ml/layers"
	"github.com/gomlx/gomlx/pkg/ml/layers/activations"

	"github.com/bicot-rl/bicot/pkg/mlx"
)

// Scope is the context scope that holds the policy's weights. Optimizer state lives elsewhere in
// the same context.
const Scope = "policy"

// masked is the logit given to tokens the text head may never emit inside a plan.
const masked = -1e9

// Model is the policy: its config, the backend, and the context holding its variables.
// Executables are built lazily and cached; a Model is safe for use by one goroutine at a time.
type Model struct {
	Config  Config
	Backend backends.Backend
	// Ctx is the root context (unchecked, so that many graphs share the variables); the weights
	// live under Scope.
	Ctx *context.Context

	mu    sync.Mutex
	execs map[string]*context.Exec
}

// New creates a policy with weights initialised from seed.
func New(backend backends.Backend, cfg Config, seed uint64) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx := context.New()
	// Weights start at std 1/sqrt(d_model). GPT-2's 0.02 (about 1/sqrt(768)) is six times too small
	// at d_model 64: signals and attention scores start near zero and binding plan phrases to
	// image positions did not begin to learn within 300 steps; at 1/sqrt(d) it did within 100.
	ctx = ctx.WithInitializer(initializers.RandomNormalFn(ctx, 1/math.Sqrt(float64(cfg.DModel)))).Checked(false)
	if err := ctx.SetRNGStateFromSeed(int64(seed)); err != nil {
		return nil, fmt.Errorf("model init: %w", err)
	}
	m := &Model{Config: cfg, Backend: backend, Ctx: ctx, execs: map[string]*context.Exec{}}
	// Build one forward pass so that every weight exists (and is initialised) from the start.
	seq := cfg.UncondSequence(nil)
	if _, err := context.ExecOnceN(backend, ctx, func(ctx *context.Context, tokens *Node) (*Node, *Node) {
		return m.LogProbsGraph(ctx, tokens, ScoreOptions{})
	}, tensors.FromFlatDataAndDimensions(seq, 1, cfg.SeqLen())); err != nil {
		return nil, fmt.Errorf("model init: %w", err)
	}
	return m, nil
}

// Exec returns the executable cached under key, building it over m.Ctx with fn (any function
// context.NewExecAny takes) on first use. A later call with the same key gets the first
// executable whatever its fn, so the key must name everything the graph bakes in (e.g. the
// optimizer's hyperparameters), and callers outside this package prefix theirs (pkg/pretrain
// uses "train/") to stay clear of the policy's own. It is exported so that the supervised trainer
// in pkg/pretrain compiles its steps once per model, in the same cache as sampling and scoring.
func (m *Model) Exec(key string, fn any) (*context.Exec, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.execs[key]; ok {
		return e, nil
	}
	e, err := context.NewExecAny(m.Backend, m.Ctx, fn)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", key, err)
	}
	m.execs[key] = e
	return e, nil
}

func layerNorm(ctx *context.Context, x *Node) *Node {
	return layers.LayerNormalization(ctx, x, -1).Epsilon(1e-5).Done()
}

func (m *Model) ffn(ctx *context.Context, h *Node) *Node {
	f := activations.Gelu(mlx.Dense(ctx.In("ff1"), h, true, m.Config.FF))
	return mlx.Dense(ctx.In("ff2"), f, true, m.Config.DModel)
}

// posTable is what each position adds to its token embedding [SeqLen, D]: a learned position
// embedding, plus the tied cell word's embedding at the positions that predict image codes
// (Config.CellTokens). ctx is the policy scope.
func (m *Model) posTable(ctx *context.Context, g *Graph) *Node {
	c := m.Config
	T := c.SeqLen()
	pctx := ctx.In("pos_embed")
	if c.SinusoidalPositions {
		pctx = pctx.WithInitializer(initializers.Zero)
	}
	pos := pctx.VariableWithShape("pos", shapes.Make(dtypes.Float32, T, c.DModel)).ValueGraph(g)
	if c.SinusoidalPositions {
		pos = Add(pos, Const(g, sinusoids(T, c.DModel, SinusoidAmplitude)))
	}
	if len(c.CellTokens) == 0 {
		return pos
	}
	ids := make([]int32, T)
	mask := make([]float32, T)
	for i, id := range c.CellTokens {
		// Position L+i holds img_start or code i-1 and predicts code i.
		ids[c.TextLen+i], mask[c.TextLen+i] = id, 1
	}
	table := ctx.In("tok_embed").VariableWithShape("embeddings", shapes.Make(dtypes.Float32, c.Vocab(), c.DModel)).ValueGraph(g)
	tied := Gather(table, Reshape(Const(g, ids), T, 1)) // [T, D]
	return Add(pos, Mul(tied, Reshape(Const(g, mask), T, 1)))
}

// HiddenGraph runs the causal transformer over tokens [N, SeqLen] (int32) and returns the final
// normalised hidden states [N, SeqLen, D]. ctx is a root context (the weights are read under
// Scope), so a cloned context serves as a frozen reference policy.
func (m *Model) HiddenGraph(ctx *context.Context, tokens *Node) *Node {
	c := m.Config
	if tokens.Rank() != 2 || tokens.Shape().Dimensions[1] != c.SeqLen() {
		panic(fmt.Sprintf("model: tokens shape %s, want [N, %d]", tokens.Shape(), c.SeqLen()))
	}
	ctx = ctx.In(Scope)
	g := tokens.Graph()
	x := layers.Embedding(ctx.In("tok_embed"), tokens, dtypes.Float32, c.Vocab(), c.DModel)
	if c.usesBags() {
		x = Add(x, m.bagGraph(tokens, x))
	}
	x = Add(x, InsertAxes(m.posTable(ctx, g), 0))
	for l := 0; l < c.Layers; l++ {
		lctx := ctx.Inf("layer_%d", l)
		x = Add(x, mlx.CausalSelfAttention(lctx.In("attn"), layerNorm(lctx.In("ln1"), x), c.Heads, c.HeadDim()))
		x = Add(x, m.ffn(lctx, layerNorm(lctx.In("ln2"), x)))
	}
	return layerNorm(ctx.In("ln_f"), x)
}

// bagGraph is what the phrase and cell bags (Config.PhraseBag, Config.CellBag) add to the
// inputs: for tokens [N, T] and their embeddings [N, T, D], the weighted means W @ emb with the
// weights of bagWeightsGraph.
func (m *Model) bagGraph(tokens, emb *Node) *Node {
	return mlx.BatchMatMul(StopGradient(m.bagWeightsGraph(tokens)), emb)
}

// bagWeightsGraph is Config.bagWeights for every position at once: [N, T, T], row t holding the
// weights over positions s of what position t adds.
func (m *Model) bagWeightsGraph(tokens *Node) *Node {
	c := m.Config
	g := tokens.Graph()
	N, T := tokens.Shape().Dimensions[0], tokens.Shape().Dimensions[1]
	var sep *Node
	for _, id := range c.separators() {
		e := Equal(tokens, Const(g, id))
		if sep == nil {
			sep = e
		} else {
			sep = LogicalOr(sep, e)
		}
	}
	seg := cumulativeSum(ConvertDType(sep, dtypes.Float32)) // [N,T]: separators at positions <= t, the phrase index
	same := Equal(BroadcastToDims(Reshape(seg, N, T, 1), N, T, T), BroadcastToDims(Reshape(seg, N, 1, T), N, T, T))
	phrase := ConvertDType(LogicalAnd(same, BroadcastToDims(Reshape(LowerTriangular(g, T), 1, T, T), N, T, T)), dtypes.Float32)
	phrase = Div(phrase, ReduceAndKeep(phrase, ReduceSum, -1)) // [N,T,T]: row t = t's phrase so far
	var w *Node
	if c.PhraseBag {
		w = phrase
	}
	if c.CellBag {
		cell := m.cellWeightsGraph(tokens, phrase) // [N,I,T]
		I := len(c.CellTokens)
		rows := []*Node{Zeros(g, shapes.Make(dtypes.Float32, N, c.TextLen, T)), cell}
		if rest := T - c.TextLen - I; rest > 0 {
			rows = append(rows, Zeros(g, shapes.Make(dtypes.Float32, N, rest, T)))
		}
		cw := Concatenate(rows, 1) // position L+i predicts code i
		if w == nil {
			w = cw
		} else {
			w = Add(w, cw)
		}
	}
	return w
}

// cellWeightsGraph gives, for each image code i, the weights [N, I, T] of the phrase bags of the
// text positions holding CellTokens[i] (averaged), or one on the text's eos if there is none.
func (m *Model) cellWeightsGraph(tokens, phrase *Node) *Node {
	c := m.Config
	g := tokens.Graph()
	N, T := tokens.Shape().Dimensions[0], tokens.Shape().Dimensions[1]
	I := len(c.CellTokens)
	inText := make([]bool, T)
	for s := 0; s < c.TextLen; s++ {
		inText[s] = true
	}
	text := BroadcastToDims(Reshape(Const(g, inText), 1, 1, T), N, I, T)
	tok := BroadcastToDims(Reshape(tokens, N, 1, T), N, I, T)
	cells := BroadcastToDims(Reshape(Const(g, c.CellTokens), 1, I, 1), N, I, T)
	match := ConvertDType(LogicalAnd(Equal(tok, cells), text), dtypes.Float32) // [N,I,T]
	count := ReduceAndKeep(match, ReduceSum, -1)                               // [N,I,1]
	named := Div(DotGeneral(match, []int{2}, []int{0}, phrase, []int{1}, []int{0}), Max(count, ScalarOne(g, dtypes.Float32)))
	// The first eos of the text part (the plan's end); a given text has at most one.
	isEOS := ConvertDType(LogicalAnd(Equal(tok, Const(g, c.Special.EOS)), text), dtypes.Float32)
	firstEOS := Mul(isEOS, ConvertDType(Equal(cumulativeSum(isEOS), ScalarOne(g, dtypes.Float32)), dtypes.Float32))
	empty := ConvertDType(Equal(count, ScalarZero(g, dtypes.Float32)), dtypes.Float32)
	return Add(named, Mul(firstEOS, empty))
}

// cumulativeSum sums x [..., T] along its last axis up to each position (inclusive).
func cumulativeSum(x *Node) *Node {
	T := x.Shape().Dimensions[x.Rank()-1]
	upper := ConvertDType(Transpose(LowerTriangular(x.Graph(), T), 0, 1), x.DType()) // [s,t] = 1 if s <= t
	return DotGeneral(x, []int{x.Rank() - 1}, nil, upper, []int{0}, nil)
}

// textLogits applies the text head to hidden states [..., D] -> [..., TextVocab]; specials that
// never occur inside a plan (pad, bos, plan, img_start, uncond) are masked out.
func (m *Model) textLogits(ctx *context.Context, h *Node) *Node {
	c := m.Config
	var logits *Node
	if c.TiedTextHead {
		// Logits are similarities with the input embeddings of the text words: a plan word the
		// attention copied from the prompt scores high at once.
		g := h.Graph()
		pctx := ctx.In(Scope)
		table := pctx.In("tok_embed").VariableWithShape("embeddings", shapes.Make(dtypes.Float32, c.Vocab(), c.DModel)).ValueGraph(g)
		words := TransposeAllAxes(mlx.GatherAxis(table, 0, mlx.Range(0, c.TextVocab)), 1, 0) // [D, TV]
		lead := h.Shape().Dimensions[:h.Rank()-1]
		n := h.Shape().Size() / c.DModel
		logits = mlx.BatchMatMul(Reshape(h, n, c.DModel), words)
		b := pctx.In("text_head").VariableWithShape("bias", shapes.Make(dtypes.Float32, c.TextVocab)).ValueGraph(g)
		logits = Reshape(Add(logits, Reshape(b, 1, c.TextVocab)), append(append([]int{}, lead...), c.TextVocab)...)
	} else {
		logits = mlx.Dense(ctx.In(Scope).In("text_head"), h, true, c.TextVocab)
	}
	bias := make([]float32, c.TextVocab)
	for _, id := range []int32{c.Special.Pad, c.Special.BOS, c.Special.Plan, c.Special.ImgStart, c.Special.Uncond} {
		bias[id] = masked
	}
	dims := make([]int, logits.Rank())
	for i := range dims {
		dims[i] = 1
	}
	dims[len(dims)-1] = c.TextVocab
	return Add(logits, Reshape(Const(h.Graph(), bias), dims...))
}

// imageLogits applies the image head to hidden states [..., D] -> [..., ImageVocab].
func (m *Model) imageLogits(ctx *context.Context, h *Node) *Node {
	c := m.Config
	logits := mlx.Dense(ctx.In(Scope).In("image_head"), h, true, c.ImageVocab)
	if len(c.CodeWords) == 0 {
		return logits
	}
	// Each code's vector is the sum of its words' vectors: A [TV, K] (word counts) maps the
	// [TV, D] word vectors to [D, K].
	g := h.Graph()
	a := make([][]float32, c.TextVocab)
	for w := range a {
		a[w] = make([]float32, c.ImageVocab)
	}
	for code, ws := range c.CodeWords {
		for _, w := range ws {
			a[w][code]++
		}
	}
	// The word vectors are the head's own (sharing the input embeddings let the image loss pull
	// the words around and stalled the text): what is shared is the factorisation, 17 attribute
	// vectors instead of 240 code vectors.
	wv := ctx.In(Scope).In("image_head").VariableWithShape("word_vectors", shapes.Make(dtypes.Float32, c.TextVocab, c.DModel)).ValueGraph(g)
	codeVecs := mlx.BatchMatMul(TransposeAllAxes(wv, 1, 0), Const(g, a)) // [D, K]
	lead := h.Shape().Dimensions[:h.Rank()-1]
	n := h.Shape().Size() / c.DModel
	tied := Reshape(mlx.BatchMatMul(Reshape(h, n, c.DModel), codeVecs), append(append([]int{}, lead...), c.ImageVocab)...)
	return Add(logits, tied)
}

// ScoreOptions selects the distribution the log-probs are taken under; it must be the one the
// tokens were sampled from.
type ScoreOptions struct {
	// CFGWeight w: guided image logits u + w*(c-u) with u from the unconditional context.
	// 0 turns guidance off (conditional logits only).
	CFGWeight float64
	// Temperature divides the logits (0 means 1).
	Temperature float64
	// ExclusiveCells scores plan words under the distribution SampleRequest.ExclusiveCells draws
	// them from: cell words the sequence already names masked out.
	ExclusiveCells bool
}

func (o ScoreOptions) invTemp() float64 {
	if o.Temperature <= 0 {
		return 1
	}
	return 1 / o.Temperature
}

// LogProbsGraph is teacher-forced scoring: for tokens [N, SeqLen] it returns
// textLogp [N, TextLen] (textLogp[n,t] = log p(token t | tokens < t) from the text head, 0 at
// t = 0) and imageLogp [N, ImageTokens] (log-prob of each image code from the image head, guided
// when opts.CFGWeight != 0). Multiply by the masks of Config.Masks; values at masked positions
// are meaningless but finite. It is differentiable with respect to the weights under ctx (the
// RL loss is built on it) and equals the log-probs Sample records for the same weights.
func (m *Model) LogProbsGraph(ctx *context.Context, tokens *Node, opts ScoreOptions) (textLogp, imageLogp *Node) {
	c := m.Config
	g := tokens.Graph()
	N, L, I, T := tokens.Shape().Dimensions[0], c.TextLen, c.ImageTokens, c.SeqLen()
	tokens = ConvertDType(tokens, dtypes.Int32)
	guided := opts.CFGWeight != 0
	input := tokens
	if guided {
		// Rows N..2N-1: the unconditional context with the same image tokens.
		uncond := Const(g, c.UncondSequence(nil)[:L])
		uncondFull := Concatenate([]*Node{BroadcastToDims(InsertAxes(uncond, 0), N, L), mlx.GatherAxis(tokens, 1, mlx.Range(L, T))}, 1)
		input = Concatenate([]*Node{tokens, uncondFull}, 0)
	}
	h := m.HiddenGraph(ctx, input) // [N or 2N, T, D]
	invT := opts.invTemp()

	// Text: hidden at positions 0..L-2 predict tokens 1..L-1.
	hc := h
	if guided {
		hc = mlx.GatherAxis(h, 0, mlx.Range(0, N))
	}
	tl := MulScalar(m.textLogits(ctx, mlx.GatherAxis(hc, 1, mlx.Range(0, L-1))), invT) // [N, L-1, TV]
	if opts.ExclusiveCells {
		named := m.namedCellsGraph(mlx.GatherAxis(tokens, 1, mlx.Range(0, L-1)))
		tl = Where(named, BroadcastToDims(Scalar(g, tl.DType(), maskedLogit), tl.Shape().Dimensions...), tl)
	}
	tTargets := mlx.GatherAxis(tokens, 1, mlx.Range(1, L))
	tlp := pick(LogSoftmax(tl, -1), tTargets, c.TextVocab)
	textLogp = Concatenate([]*Node{Zeros(g, shapes.Make(dtypes.Float32, N, 1)), tlp}, 1)

	// Image: hidden at positions L..L+I-1 predict the codes at L+1..L+I.
	il := m.imageLogits(ctx, mlx.GatherAxis(h, 1, mlx.Range(L, L+I))) // [N or 2N, I, K]
	if guided {
		cond := mlx.GatherAxis(il, 0, mlx.Range(0, N))
		unc := mlx.GatherAxis(il, 0, mlx.Range(N, 2*N))
		il = Add(unc, MulScalar(Sub(cond, unc), opts.CFGWeight))
	}
	il = MulScalar(il, invT)
	iTargets := AddScalar(mlx.GatherAxis(tokens, 1, mlx.Range(L+1, T)), -float64(c.TextVocab))
	imageLogp = pick(LogSoftmax(il, -1), iTargets, c.ImageVocab)
	return
}

// maskedLogit stands for -Inf in the scoring graph: exp of it underflows to exactly 0 after the
// max is subtracted, as -Inf does in the sampler, and its gradient is 0 without Inf arithmetic.
const maskedLogit = -1e30

// namedCellsGraph is, for text tokens [N, P], a boolean [N, P, TextVocab] that holds at (n, p, v)
// when v is a cell word among tokens n[0..p]: the words ExclusiveCells forbids as token p+1.
func (m *Model) namedCellsGraph(tokens *Node) *Node {
	c := m.Config
	g := tokens.Graph()
	isCell := make([]float32, c.TextVocab)
	for _, cell := range c.CellTokens {
		isCell[cell] = 1
	}
	oh := OneHot(tokens, c.TextVocab, dtypes.Float32) // [N, P, TV]
	seen := Mul(oh, BroadcastToDims(Reshape(Const(g, isCell), 1, 1, c.TextVocab), oh.Shape().Dimensions...))
	return GreaterThan(CumSum(seen, 1), ZerosLike(seen))
}

// pick returns logp[..., target] for logp [..., V] and integer targets [...]; out-of-range
// targets give 0.
func pick(logp, targets *Node, vocab int) *Node {
	return ReduceSum(Mul(logp, OneHot(targets, vocab, dtypes.Float32)), -1)
}

// SupervisedLossGraph is the pretraining loss: the mean negative log-likelihood of the masked
// text tokens plus that of the masked image tokens (a per-level mean, so the ~16 image tokens
// and the plan words weigh the same). Masks are float32 [N, TextLen] and [N, ImageTokens].
func (m *Model) SupervisedLossGraph(ctx *context.Context, tokens, textMask, imageMask *Node) (loss, textNLL, imageNLL *Node) {
	tl, il := m.LogProbsGraph(ctx, tokens, ScoreOptions{})
	mean := func(lp, mask *Node) *Node {
		n := Max(ReduceAllSum(mask), ScalarOne(mask.Graph(), dtypes.Float32))
		return Neg(Div(ReduceAllSum(Mul(lp, mask)), n))
	}
	textNLL, imageNLL = mean(tl, textMask), mean(il, imageMask)
	return Add(textNLL, imageNLL), textNLL, imageNLL
}

// NumParameters counts the policy's weights.
func (m *Model) NumParameters() int {
	n := 0
	for v := range m.Ctx.IterVariables() {
		if IsPolicyVariable(v) {
			n += v.Shape().Size()
		}
	}
	return n
}

// IsPolicyVariable reports whether v is one of the policy's weights (under Scope) rather than
// optimizer state kept in the same context: what a trainer updates and what a weights-only
// checkpoint holds.
func IsPolicyVariable(v *context.Variable) bool {
	s := v.Scope()
	return s == "/"+Scope || len(s) > len(Scope)+1 && s[:len(Scope)+2] == "/"+Scope+"/"
}

// sinusoids is the [n][d] table of fixed position codes: pairs of sin/cos at geometrically spaced
// frequencies (wavelengths 2*pi to 2*pi*n), scaled by amp.
func sinusoids(n, d int, amp float64) [][]float32 {
	out := make([][]float32, n)
	for p := range out {
		out[p] = make([]float32, d)
		for i := 0; i < d/2; i++ {
			f := math.Pow(float64(n), -float64(i)/float64(d/2))
			out[p][2*i] = float32(amp * math.Sin(float64(p)*f))
			out[p][2*i+1] = float32(amp * math.Cos(float64(p)*f))
		}
	}
	return out
}
