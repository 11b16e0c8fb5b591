package experts

import (
	"context"
	"fmt"
	"image"
	"math"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/gomlx/gomlx/backends"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph code reads as math
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"

	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// Names of the built-in experts; each is also its weights file's stem (models/experts/NAME.safetensors).
const (
	Detector = "detector"
	VQA      = "vqa"
	HPS      = "hps"
	ORM      = "orm"
)

// Names lists the built-in experts in ensemble order.
var Names = []string{Detector, VQA, HPS, ORM}

// inferBatch is the fixed batch every inference graph is compiled for; shorter batches are
// padded, longer ones split, so each model compiles once.
const inferBatch = 64

// padTo is the batch a chunk of n queries runs as: the next power of two, at most inferBatch.
// A reward worker scores samples a few at a time; padding each call to 64 rows made one sample
// cost as much as 64. Powers of two keep the compiled shapes to seven.
func padTo(n int) int {
	b := 1
	for b < n && b < inferBatch {
		b *= 2
	}
	return b
}

// WeightsPath is where the weights of expert name live under dir.
func WeightsPath(dir, name string) string { return filepath.Join(dir, name+".safetensors") }

// Model is one loaded built-in expert. It implements reward.Backend and is safe for concurrent
// use (calls are serialised per model; the ensemble runs different models in parallel).
type Model struct {
	name  string
	meta  map[string]string
	vocab vocab
	mu    sync.Mutex
	exec  *mlctx.Exec

	// scoreOffset and scoreScale standardise the preference model's raw scores (see calibrate).
	scoreOffset, scoreScale float64
}

// readCalibration reads the preference score standardisation from the metadata; files written
// before calibration (mid-training) have none and keep raw scores.
func (m *Model) readCalibration() error {
	o, s := m.meta["score_offset"], m.meta["score_scale"]
	if o == "" && s == "" {
		return nil
	}
	off, err1 := strconv.ParseFloat(o, 64)
	scale, err2 := strconv.ParseFloat(s, 64)
	if err1 != nil || err2 != nil || math.IsNaN(off) || math.IsInf(off, 0) || !(scale > 0) || math.IsInf(scale, 0) {
		return fmt.Errorf("bad score calibration offset %q scale %q", o, s)
	}
	m.scoreOffset, m.scoreScale = off, scale
	return nil
}

// LoadModel loads expert name's weights from dir and compiles its inference graph on backend.
func LoadModel(backend backends.Backend, dir, name string) (*Model, error) {
	ctx, meta, err := loadWeights(WeightsPath(dir, name), name)
	if err != nil {
		return nil, err
	}
	m := &Model{name: name, meta: meta, vocab: newVocab(), scoreScale: 1}
	if name == HPS {
		if err := m.readCalibration(); err != nil {
			return nil, fmt.Errorf("expert %s: %s: %w", name, WeightsPath(dir, name), err)
		}
	}
	ctx = ctx.Reuse()
	var fn any
	switch name {
	case Detector:
		fn = func(ctx *mlctx.Context, patches *Node) []*Node {
			obj, shape, colour, size, texture := detectorHeads(ctx.In("model"), patches)
			return []*Node{Sigmoid(obj), Softmax(shape, -1), Softmax(colour, -1), Softmax(size, -1), Softmax(texture, -1)}
		}
	case VQA:
		fn = func(ctx *mlctx.Context, patches, q *Node) *Node {
			return Sigmoid(vqaLogit(ctx.In("model"), patches, q))
		}
	case HPS:
		fn = func(ctx *mlctx.Context, patches, windows, mask *Node) *Node {
			return pairLogit(ctx.In("model"), patches, windows, mask, m.vocab.size())
		}
	case ORM:
		fn = func(ctx *mlctx.Context, patches, windows, mask *Node) *Node {
			return Sigmoid(pairLogit(ctx.In("model"), patches, windows, mask, m.vocab.size()))
		}
	default:
		return nil, fmt.Errorf("unknown expert %q (want one of %v)", name, Names)
	}
	m.exec, err = mlctx.NewExecAny(backend, ctx, fn)
	if err != nil {
		return nil, fmt.Errorf("expert %s: build inference graph: %w", name, err)
	}
	// Compile and check the weights against the graph once, so that a file with missing or
	// misshapen tensors fails here rather than on the first batch.
	if _, err := m.run(m.blankInputs()...); err != nil {
		return nil, fmt.Errorf("expert %s: weights in %s do not fit the model: %w", name, WeightsPath(dir, name), err)
	}
	return m, nil
}

// Name is the expert's name.
func (m *Model) Name() string { return m.name }

// Meta returns the metadata stored with the weights (training command, seed, ...).
func (m *Model) Meta() map[string]string { return m.meta }

// Output implements reward.Backend.
func (m *Model) Output() reward.Output {
	switch m.name {
	case Detector:
		return reward.OutputBoxes
	case HPS:
		return reward.OutputScore
	}
	return reward.OutputAnswers
}

func (m *Model) blankInputs() []any {
	p := tensors.FromFlatDataAndDimensions(make([]float32, inferBatch*NumCells*PatchDim), inferBatch, NumCells, PatchDim)
	switch m.name {
	case Detector:
		return []any{p}
	case VQA:
		return []any{p, tensors.FromFlatDataAndDimensions(make([]float32, inferBatch*numAttrs), inferBatch, numAttrs)}
	}
	w, mask := textTensors(make([]int32, inferBatch*MaxWords*wordWindow), make([]float32, inferBatch*MaxWords), inferBatch)
	return []any{p, w, mask}
}

// run executes the graph, turning gomlx panics into errors.
func (m *Model) run(args ...any) (out [][]float32, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("expert %s: %v", m.name, r)
		}
	}()
	res, err := m.exec.Exec(args...)
	if err != nil {
		return nil, fmt.Errorf("expert %s: %w", m.name, err)
	}
	out = make([][]float32, len(res))
	for i, t := range res {
		out[i], err = tensors.CopyFlatData[float32](t)
		if err != nil {
			return nil, fmt.Errorf("expert %s: %w", m.name, err)
		}
	}
	return out, nil
}

// minBoxScore is the lowest score a detection is reported with; rules apply their own threshold.
const minBoxScore = 0.05

// Infer implements reward.Backend.
func (m *Model) Infer(ctx context.Context, qs []reward.Query) ([]reward.Raw, error) {
	switch m.name {
	case Detector:
		return m.detect(ctx, qs)
	case VQA:
		return m.answer(ctx, qs)
	}
	return m.pairs(ctx, qs)
}

func chunkPrompts(qs []reward.Query) []string {
	out := make([]string, len(qs))
	for i, q := range qs {
		out[i] = q.Prompt.Prompt
	}
	return out
}

func images(qs []reward.Query) []image.Image {
	out := make([]image.Image, len(qs))
	for i, q := range qs {
		out[i] = q.Image
	}
	return out
}

// DetectCells returns, per image, the objectness and shape probabilities of every cell
// (obj [n][NumCells], shape [n][NumCells][5]); experts-eval reads them directly.
func (m *Model) DetectCells(ctx context.Context, imgs []image.Image) (obj [][]float32, shape [][][]float32, err error) {
	for start := 0; start < len(imgs); start += inferBatch {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		chunk := imgs[start:min(start+inferBatch, len(imgs))]
		b := padTo(len(chunk))
		p := tensors.FromFlatDataAndDimensions(patchBatch(chunk, b), b, NumCells, PatchDim)
		out, err := m.run(p)
		if err != nil {
			return nil, nil, err
		}
		for i := range chunk {
			obj = append(obj, out[0][i*NumCells:(i+1)*NumCells])
			sh := make([][]float32, NumCells)
			for c := range sh {
				k := (i*NumCells + c) * 5
				sh[c] = out[1][k : k+5]
			}
			shape = append(shape, sh)
		}
	}
	return obj, shape, nil
}

func (m *Model) detect(ctx context.Context, qs []reward.Query) ([]reward.Raw, error) {
	obj, shape, err := m.DetectCells(ctx, images(qs))
	if err != nil {
		return nil, err
	}
	out := make([]reward.Raw, len(qs))
	for i := range qs {
		out[i].Boxes = []reward.Box{}
		for c := 0; c < NumCells; c++ {
			for k, s := range scene.Shapes {
				score := float64(obj[i][c]) * float64(shape[i][c][k])
				if score >= minBoxScore {
					out[i].Boxes = append(out[i].Boxes, reward.Box{Label: string(s), Score: min(1, score), Box: cellBox(c)})
				}
			}
		}
	}
	return out, nil
}

// answer flattens every (image, question) pair into fixed batches.
func (m *Model) answer(ctx context.Context, qs []reward.Query) ([]reward.Raw, error) {
	type pair struct{ q, k int }
	var ps []pair
	for i, q := range qs {
		for k := range q.Questions {
			ps = append(ps, pair{i, k})
		}
	}
	out := make([]reward.Raw, len(qs))
	for i, q := range qs {
		out[i].Answers = make([]reward.Answer, len(q.Questions))
	}
	for start := 0; start < len(ps); start += inferBatch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := ps[start:min(start+inferBatch, len(ps))]
		b := padTo(len(chunk))
		imgs := make([]image.Image, len(chunk))
		attrs := make([]float32, b*numAttrs)
		for j, p := range chunk {
			imgs[j] = qs[p.q].Image
			questionAttrs(qs[p.q].Questions[p.k], attrs[j*numAttrs:(j+1)*numAttrs])
		}
		res, err := m.run(tensors.FromFlatDataAndDimensions(patchBatch(imgs, b), b, NumCells, PatchDim),
			tensors.FromFlatDataAndDimensions(attrs, b, numAttrs))
		if err != nil {
			return nil, err
		}
		for j, p := range chunk {
			y := float64(res[0][j])
			out[p.q].Answers[p.k] = reward.Answer{Yes: y, No: 1 - y}
		}
	}
	return out, nil
}

// pairs scores (image, prompt text) pairs with the preference or alignment model. The ORM's
// question is fixed (reward.ORMQuestion): the model reads the prompt and answers it once per
// question asked.
func (m *Model) pairs(ctx context.Context, qs []reward.Query) ([]reward.Raw, error) {
	out := make([]reward.Raw, len(qs))
	for start := 0; start < len(qs); start += inferBatch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := qs[start:min(start+inferBatch, len(qs))]
		b := padTo(len(chunk))
		w, mask := m.vocab.textBatch(chunkPrompts(chunk), b)
		res, err := m.run(tensors.FromFlatDataAndDimensions(patchBatch(images(chunk), b), b, NumCells, PatchDim), w, mask)
		if err != nil {
			return nil, err
		}
		for j, q := range chunk {
			v := float64(res[0][j])
			if m.name == HPS {
				v = (v - m.scoreOffset) / m.scoreScale
				out[start+j].Score = &v
				continue
			}
			out[start+j].Answers = make([]reward.Answer, len(q.Questions))
			for k := range q.Questions {
				out[start+j].Answers[k] = reward.Answer{Yes: v, No: 1 - v}
			}
		}
	}
	return out, nil
}
