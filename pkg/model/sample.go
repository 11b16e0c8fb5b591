package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/layers"

	"github.com/bicot-rl/bicot/pkg/mlx"
)

// SampleRequest asks for G samples of each prompt.
type SampleRequest struct {
	// Prompts are encoded prompt words (no specials).
	Prompts [][]int32
	// PromptIDs identify the prompts for the random streams (e.g. their index in the run's prompt
	// file); nil means 0, 1, 2, ... Pass them so that a sample does not depend on which batch or
	// worker it was drawn in.
	PromptIDs []uint64
	// G is the number of samples per prompt (group size).
	G int
	// Seed and Step, with the prompt id and the sample index, seed each sample's random stream.
	Seed, Step uint64
	// Temperature divides the logits of both levels (0 means 1).
	Temperature float64
	// CFGWeight w guides the image tokens: u + w*(c-u); 0 turns guidance off.
	CFGWeight float64
	// ConditionalLogp records, for image tokens drawn with guidance, the log-prob under the
	// conditional distribution (temperature applied, no guidance) instead of the guided one the
	// token was drawn from. A learner that trains the conditional log-probs (as T2I-R1's code
	// does) needs exactly these as logp_old for its on-policy ratio to be 1.
	ConditionalLogp bool
	// NoPlan gives an empty plan (the eos right after [plan]) instead of sampling one.
	NoPlan bool
	// MaxPlanTokens caps the plan words (0: as many as fit the text part). A plan that reaches the
	// cap gets a given eos and is marked Truncated.
	MaxPlanTokens int
	// FullForward re-runs the whole sequence for every token instead of using the KV cache. It is
	// much slower and exists for benchmarks and cross-checks.
	FullForward bool
	// ExclusiveCells draws a plan's cell words without putting two objects in one cell: a cell
	// the sequence already names is never drawn again (its logit is masked, and the recorded
	// log-prob is under the masked distribution; ScoreOptions.ExclusiveCells scores the same).
	// Needs Config.CellTokens.
	ExclusiveCells bool
}

// Sample is one generated sequence with what the learner needs to train on it.
type Sample struct {
	Prompt int // index into SampleRequest.Prompts
	Index  int // sample index within the prompt's group
	Tokens []int32
	Plan   []int32 // plan words (without eos)
	Codes  []int   // image codes
	// TextLogp and TextMask are per text position [TextLen]; ImageLogp per image token. The
	// log-probs are under the distribution the token was drawn from (temperature, and guidance for
	// image tokens unless SampleRequest.ConditionalLogp), 0 where nothing was sampled.
	TextLogp  []float32
	TextMask  []float32
	ImageLogp []float32
	ImageMask []float32
	Truncated bool
}

// SampleSeed derives a sample's random stream seed from (seed, step, prompt id, sample index).
func SampleSeed(seed, step, prompt, sample uint64) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, v := range []uint64{seed, step, prompt, sample} {
		h = splitmix(h ^ splitmix(v))
	}
	return h
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// gumbel fills out with Gumbel(0,1) noise for one (sample, position): each position has its own
// PCG stream, so the noise does not depend on what else was drawn.
func gumbel(out []float64, sampleSeed uint64, pos int) {
	r := rand.New(rand.NewPCG(sampleSeed, uint64(pos)))
	for i := range out {
		u := r.Float64()
		for u == 0 {
			u = r.Float64()
		}
		out[i] = -math.Log(-math.Log(u))
	}
}

// drawGumbelMax samples from softmax(logits*invT) by Gumbel-max and returns the token and its
// log-probability.
func drawGumbelMax(logits []float64, invT float64, noise []float64) (int, float64) {
	best, arg := math.Inf(-1), 0
	mx := math.Inf(-1)
	for i, l := range logits {
		s := l * invT
		if s > mx {
			mx = s
		}
		if v := s + noise[i]; v > best {
			best, arg = v, i
		}
	}
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(l*invT - mx)
	}
	return arg, logits[arg]*invT - mx - math.Log(sum)
}

// maskNamedCells sets to -Inf the logits of the cell words seq already holds, so that no cell is
// named twice (SampleRequest.ExclusiveCells; namedCellsGraph is the scoring twin).
func maskNamedCells(logits []float64, cells, seq []int32) {
	for _, cell := range cells {
		if slices.Contains(seq, cell) {
			logits[cell] = math.Inf(-1)
		}
	}
}

// logSoftmaxAt returns log softmax(logits*invT)[k].
func logSoftmaxAt(logits []float64, invT float64, k int) float64 {
	mx := math.Inf(-1)
	for _, l := range logits {
		mx = max(mx, l*invT)
	}
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(l*invT - mx)
	}
	return logits[k]*invT - mx - math.Log(sum)
}

// decodeStepGraph processes one position per row with the KV cache: inputs are token [R] (the
// token at pos), pos (scalar) and the caches (K, V per layer, see mlx.CacheShapes, holding
// positions < pos); outputs are the text and image logits for position pos+1 and each layer's
// key and value at pos ([R, H, dh]) for the caller to write into the caches.
func (m *Model) decodeStepGraph(ctx *context.Context, inputs []*Node) []*Node {
	c := m.Config
	token, pos, caches := inputs[0], inputs[1], inputs[2:]
	g := token.Graph()
	pctx := ctx.In(Scope)
	x := layers.Embedding(pctx.In("tok_embed"), token, dtypes.Float32, c.Vocab(), c.DModel) // [R, D]
	if c.usesBags() {
		// inputs[2]: what the bags add at pos [R, D], averaged on the host (kvStepper.bags).
		x = Add(x, caches[0])
		caches = caches[1:]
	}
	posRow := Gather(m.posTable(pctx, g), Reshape(ConvertDType(pos, dtypes.Int32), 1)) // [D]
	x = Add(x, InsertAxes(posRow, 0))
	out := []*Node{nil, nil}
	for l := 0; l < c.Layers; l++ {
		lctx := pctx.Inf("layer_%d", l)
		a, k, v := mlx.CachedAttentionStep(lctx.In("attn"), layerNorm(lctx.In("ln1"), x), pos, caches[2*l], caches[2*l+1], c.Heads, c.HeadDim())
		x = Add(x, a)
		x = Add(x, m.ffn(lctx, layerNorm(lctx.In("ln2"), x)))
		out = append(out, k, v)
	}
	h := layerNorm(pctx.In("ln_f"), x)
	out[0], out[1] = m.textLogits(ctx, h), m.imageLogits(ctx, h)
	return out
}

// fullStepGraph computes the logits for position pos+1 by running the whole sequence.
func (m *Model) fullStepGraph(ctx *context.Context, tokens, pos *Node) (textLogits, imageLogits *Node) {
	c := m.Config
	h := m.HiddenGraph(ctx, tokens) // [R, T, D]
	sel := ConvertDType(mlx.OneHotMask(tokens.Graph(), c.SeqLen(), pos), dtypes.Float32)
	hp := ReduceSum(Mul(h, Reshape(sel, 1, c.SeqLen(), 1)), 1) // [R, D]
	return m.textLogits(ctx, hp), m.imageLogits(ctx, hp)
}

// stepper runs one decoding position for all rows.
type stepper interface {
	step(buf [][]int32, pos int) (text, image []float32, err error)
}

type kvStepper struct {
	m      *Model
	exec   *context.Exec
	rows   int
	caches [][]float32 // K, V per layer, flat in mlx.CacheShapes layout
	// table is the embedding table [Vocab*D] and weights a scratch row, for the bags.
	table, weights []float32
}

func (s *kvStepper) step(buf [][]int32, pos int) ([]float32, []float32, error) {
	c := s.m.Config
	col := make([]int32, len(buf))
	for r := range buf {
		col[r] = buf[r][pos]
	}
	kd, vd := mlx.CacheShapes(s.rows, c.Heads, c.SeqLen(), c.HeadDim())
	args := []any{tensors.FromFlatDataAndDimensions(col, len(buf)), int32(pos)}
	if c.usesBags() {
		bags, err := s.bags(buf, pos)
		if err != nil {
			return nil, nil, fmt.Errorf("decode step %d: %w", pos, err)
		}
		args = append(args, tensors.FromFlatDataAndDimensions(bags, len(buf), c.DModel))
	}
	for i, cache := range s.caches {
		dims := kd
		if i%2 == 1 {
			dims = vd
		}
		args = append(args, tensors.FromFlatDataAndDimensions(cache, dims...))
	}
	out, err := s.exec.Exec(args...)
	if err != nil {
		return nil, nil, fmt.Errorf("decode step %d: %w", pos, err)
	}
	for l := 0; l < c.Layers; l++ {
		mlx.WriteCaches(s.caches[2*l], s.caches[2*l+1], tensors.MustCopyFlatData[float32](out[2+2*l]),
			tensors.MustCopyFlatData[float32](out[3+2*l]), s.rows, c.Heads, c.SeqLen(), c.HeadDim(), pos)
	}
	return tensors.MustCopyFlatData[float32](out[0]), tensors.MustCopyFlatData[float32](out[1]), nil
}

// bags averages, on the host, the token embeddings each row's bag weights name at pos: what
// bagGraph adds to the input in the full pass. A bag has a handful of nonzero weights, so this
// costs a few D-vectors per row instead of gathering every position's embedding in the graph.
// The embedding table is read once per stepper (the weights do not change while sampling).
func (s *kvStepper) bags(buf [][]int32, pos int) ([]float32, error) {
	c := s.m.Config
	if s.table == nil {
		v := s.m.Ctx.In(Scope).In("tok_embed").GetVariable("embeddings")
		if v == nil {
			return nil, fmt.Errorf("bags: no embedding table")
		}
		t, err := v.Value()
		if err != nil {
			return nil, fmt.Errorf("bags: %w", err)
		}
		s.table = tensors.MustCopyFlatData[float32](t)
		s.weights = make([]float32, c.SeqLen())
	}
	D := c.DModel
	out := make([]float32, len(buf)*D)
	for r, row := range buf {
		c.bagWeights(row, pos, s.weights)
		dst := out[r*D : (r+1)*D]
		for p, w := range s.weights {
			if w == 0 {
				continue
			}
			e := s.table[int(row[p])*D : (int(row[p])+1)*D]
			for d := range dst {
				dst[d] += w * e[d]
			}
		}
	}
	return out, nil
}

type fullStepper struct {
	m    *Model
	exec *context.Exec
}

func (s *fullStepper) step(buf [][]int32, pos int) ([]float32, []float32, error) {
	T := s.m.Config.SeqLen()
	flat := make([]int32, 0, len(buf)*T)
	for _, row := range buf {
		flat = append(flat, row...)
	}
	out, err := s.exec.Exec(tensors.FromFlatDataAndDimensions(flat, len(buf), T), int32(pos))
	if err != nil {
		return nil, nil, fmt.Errorf("full forward step %d: %w", pos, err)
	}
	return tensors.MustCopyFlatData[float32](out[0]), tensors.MustCopyFlatData[float32](out[1]), nil
}

func (m *Model) newStepper(rows int, full bool) (stepper, error) {
	c := m.Config
	if full {
		e, err := m.Exec("full_step", func(ctx *context.Context, tokens, pos *Node) (*Node, *Node) {
			return m.fullStepGraph(ctx, tokens, pos)
		})
		if err != nil {
			return nil, err
		}
		return &fullStepper{m: m, exec: e}, nil
	}
	e, err := m.Exec("kv_step", func(ctx *context.Context, inputs []*Node) []*Node {
		return m.decodeStepGraph(ctx, inputs)
	})
	if err != nil {
		return nil, err
	}
	s := &kvStepper{m: m, exec: e, rows: rows}
	for i := 0; i < 2*c.Layers; i++ {
		s.caches = append(s.caches, make([]float32, rows*c.Heads*c.SeqLen()*c.HeadDim()))
	}
	return s, nil
}

// Sample draws G samples per prompt: the plan words after [plan] (until eos), then the image
// codes after img_start given prompt and plan, all rows advancing together one position per
// step. The result is prompt-major: prompt i's sample j is at i*G+j. Each sample's tokens depend
// only on the weights, the request options and SampleSeed(Seed, Step, prompt id, j).
func (m *Model) Sample(req SampleRequest) ([]Sample, error) {
	c := m.Config
	L, T := c.TextLen, c.SeqLen()
	if req.G <= 0 {
		return nil, fmt.Errorf("sample: G must be > 0, got %d", req.G)
	}
	if len(req.Prompts) == 0 {
		return nil, fmt.Errorf("sample: no prompts")
	}
	if req.PromptIDs != nil && len(req.PromptIDs) != len(req.Prompts) {
		return nil, fmt.Errorf("sample: %d prompt ids for %d prompts", len(req.PromptIDs), len(req.Prompts))
	}
	if math.IsNaN(req.Temperature) || math.IsInf(req.Temperature, 0) || req.Temperature < 0 {
		return nil, fmt.Errorf("sample: temperature %v must be finite and >= 0", req.Temperature)
	}
	if math.IsNaN(req.CFGWeight) || math.IsInf(req.CFGWeight, 0) {
		return nil, fmt.Errorf("sample: cfg weight %v must be finite", req.CFGWeight)
	}
	if req.ExclusiveCells && len(c.CellTokens) == 0 {
		return nil, fmt.Errorf("sample: exclusive cells need the model's cell_tokens")
	}
	invT := ScoreOptions{Temperature: req.Temperature}.invTemp()
	N := len(req.Prompts) * req.G
	guided := req.CFGWeight != 0
	R := N
	if guided {
		R = 2 * N
	}
	buf := make([][]int32, R)
	out := make([]Sample, N)
	planPos := make([]int, N)
	limit := make([]int, N) // last position a plan word may be sampled at
	done := make([]bool, N)
	seeds := make([]uint64, N)
	for i, p := range req.Prompts {
		seq, err := c.Sequence(p, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("sample: prompt %d: %w", i, err)
		}
		id := uint64(i)
		if req.PromptIDs != nil {
			id = req.PromptIDs[i]
		}
		for j := 0; j < req.G; j++ {
			n := i*req.G + j
			buf[n] = append([]int32(nil), seq...)
			planPos[n] = PlanPos(len(p))
			// Leave room for an eos before the image part.
			limit[n] = L - 2
			if req.MaxPlanTokens > 0 {
				limit[n] = min(limit[n], planPos[n]+req.MaxPlanTokens)
			}
			seeds[n] = SampleSeed(req.Seed, req.Step, id, uint64(j))
			out[n] = Sample{Prompt: i, Index: j, TextLogp: make([]float32, L), TextMask: make([]float32, L),
				ImageLogp: make([]float32, c.ImageTokens), ImageMask: make([]float32, c.ImageTokens)}
			if guided {
				buf[N+n] = c.UncondSequence(nil)
			}
		}
	}
	st, err := m.newStepper(R, req.FullForward)
	if err != nil {
		return nil, err
	}
	tv, iv := c.TextVocab, c.ImageVocab
	textNoise, imageNoise := make([]float64, tv), make([]float64, iv)
	logits := make([]float64, max(tv, iv))
	condLogits := make([]float64, iv)
	for pos := 0; pos < T-1; pos++ {
		next := pos + 1
		// Every step runs, even where all rows are given tokens: later positions attend to them.
		tl, il, err := st.step(buf, pos)
		if err != nil {
			return nil, fmt.Errorf("sample: %w", err)
		}
		for n := 0; n < N; n++ {
			s := &out[n]
			switch {
			case next < L:
				if next <= planPos[n] || done[n] {
					continue
				}
				if req.NoPlan {
					buf[n][next], done[n] = c.Special.EOS, true
					continue
				}
				if next > limit[n] {
					buf[n][next], done[n], s.Truncated = c.Special.EOS, true, true
					continue
				}
				for k := 0; k < tv; k++ {
					logits[k] = float64(tl[n*tv+k])
				}
				if req.ExclusiveCells {
					maskNamedCells(logits[:tv], c.CellTokens, buf[n][:next])
				}
				gumbel(textNoise, seeds[n], next)
				tok, lp := drawGumbelMax(logits[:tv], invT, textNoise)
				buf[n][next] = int32(tok)
				s.TextLogp[next], s.TextMask[next] = float32(lp), 1
				if int32(tok) == c.Special.EOS {
					done[n] = true
				}
			case next == L:
				// img_start is given.
			default:
				for k := 0; k < iv; k++ {
					cl := float64(il[n*iv+k])
					condLogits[k] = cl
					if guided {
						u := float64(il[(N+n)*iv+k])
						cl = u + req.CFGWeight*(cl-u)
					}
					logits[k] = cl
				}
				gumbel(imageNoise, seeds[n], next)
				code, lp := drawGumbelMax(logits[:iv], invT, imageNoise)
				if guided && req.ConditionalLogp {
					lp = logSoftmaxAt(condLogits, invT, code)
				}
				tok := c.ImageToken(code)
				buf[n][next] = tok
				if guided {
					buf[N+n][next] = tok
				}
				s.ImageLogp[next-L-1], s.ImageMask[next-L-1] = float32(lp), 1
			}
		}
	}
	for n := range out {
		out[n].Tokens = buf[n]
		out[n].Plan = c.PlanWords(buf[n])
		out[n].Codes = c.ImageCodes(buf[n])
	}
	return out, nil
}
