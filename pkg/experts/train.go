package experts

import (
	"context"
	"fmt"
	"hash/fnv"
	"image"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/gomlx/gomlx/backends"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive // graph code reads as math
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// TrainOptions configure TrainAll and Train.
type TrainOptions struct {
	Seed uint64
	// Steps overrides each expert's number of optimiser steps (tests use a handful); 0 keeps the
	// expert's default (defaultSteps).
	Steps int
	// Command is recorded in the weights' metadata so that a file says how it was made.
	Command string
	Log     zerolog.Logger
}

// defaultSteps are the optimiser steps per expert: enough for useful but imperfect models, all
// four in about six minutes on two cores.
var defaultSteps = map[string]int{Detector: 500, VQA: 1800, HPS: 800, ORM: 2000}

const (
	trainBatch = 64
	learnRate  = 2e-3
)

// TrainAll trains every built-in expert and writes its weights to dir.
func TrainAll(ctx context.Context, backend backends.Backend, dir string, o TrainOptions) error {
	for _, name := range Names {
		if err := Train(ctx, backend, dir, name, o); err != nil {
			return err
		}
	}
	return nil
}

// expertSeed derives an expert's data and initialisation seed from the run seed.
func expertSeed(seed uint64, name string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return seed ^ h.Sum64()
}

// Train trains one expert and writes its weights to WeightsPath(dir, name).
func Train(ctx context.Context, backend backends.Backend, dir, name string, o TrainOptions) error {
	steps := defaultSteps[name]
	if o.Steps > 0 {
		steps = o.Steps
	}
	s := expertSeed(o.Seed, name)
	rng := rand.New(rand.NewPCG(s, 0x5eed))
	voc := newVocab()
	var loss func(ctx *mlctx.Context, in []*Node) *Node
	var batch func() ([]any, error)
	switch name {
	case Detector:
		loss, batch = detectorLoss, func() ([]any, error) { return detectorBatch(rng) }
	case VQA:
		loss, batch = vqaLoss, func() ([]any, error) { return vqaBatch(rng) }
	case ORM:
		loss = func(ctx *mlctx.Context, in []*Node) *Node {
			return bceLogits(pairLogit(ctx, in[0], in[1], in[2], voc.size()), in[3])
		}
		batch = func() ([]any, error) { return ormBatch(rng, voc) }
	case HPS:
		loss = func(ctx *mlctx.Context, in []*Node) *Node {
			good := pairLogit(ctx, in[0], in[2], in[3], voc.size())
			bad := pairLogit(ctx, in[1], in[2], in[3], voc.size())
			return ReduceAllMean(Softplus(Sub(bad, good))) // Bradley-Terry: -log sigmoid(good - bad)
		}
		batch = func() ([]any, error) { return hpsBatch(rng, voc) }
	default:
		return fmt.Errorf("train: unknown expert %q (want one of %v)", name, Names)
	}
	mctx := mlctx.New().Checked(false)
	if err := mctx.SetRNGStateFromSeed(int64(s >> 1)); err != nil {
		return fmt.Errorf("train %s: %w", name, err)
	}
	opt := optimizers.Adam().LearningRate(learnRate).Done()
	exec, err := mlctx.NewExec(backend, mctx, func(ctx *mlctx.Context, in []*Node) *Node {
		l := loss(ctx.In("model"), in)
		opt.UpdateGraph(ctx, l.Graph(), l)
		return l
	})
	if err != nil {
		return fmt.Errorf("train %s: %w", name, err)
	}
	log := o.Log.With().Str("expert", name).Logger()
	start := time.Now()
	avg := math.NaN()
	for step := 1; step <= steps; step++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("train %s: %w", name, err)
		}
		in, err := batch()
		if err != nil {
			return fmt.Errorf("train %s: step %d: %w", name, step, err)
		}
		res, err := exec.Exec(in...)
		if err != nil {
			return fmt.Errorf("train %s: step %d: %w", name, step, err)
		}
		l := float64(res[0].Value().(float32))
		if math.IsNaN(l) || math.IsInf(l, 0) {
			return fmt.Errorf("train %s: step %d: loss is %v", name, step, l)
		}
		if math.IsNaN(avg) {
			avg = l
		}
		avg = 0.95*avg + 0.05*l
		if step%100 == 0 || step == steps {
			log.Info().Int("step", step).Float64("loss", avg).Dur("elapsed", time.Since(start)).Msg("train expert")
		}
	}
	meta := map[string]string{
		"expert":  name,
		"seed":    strconv.FormatUint(o.Seed, 10),
		"steps":   strconv.Itoa(steps),
		"command": o.Command,
		"loss":    strconv.FormatFloat(avg, 'f', 4, 64),
	}
	if err := saveWeights(WeightsPath(dir, name), mctx, meta); err != nil {
		return err
	}
	if name == HPS {
		// The Bradley-Terry loss fixes only differences of scores, and it pushes them apart without
		// bound. Standardise the scores on fresh pairs so the rule's logistic squash spreads them
		// over (0, 1) instead of saturating; the model applies this itself (Model.Infer).
		off, scale, err := calibrate(ctx, backend, dir, rand.New(rand.NewPCG(s, 0xca1)))
		if err != nil {
			return fmt.Errorf("train %s: calibrate: %w", name, err)
		}
		meta["score_offset"] = strconv.FormatFloat(off, 'g', -1, 64)
		meta["score_scale"] = strconv.FormatFloat(scale, 'g', -1, 64)
		if err := saveWeights(WeightsPath(dir, name), mctx, meta); err != nil {
			return err
		}
		log.Info().Float64("offset", off).Float64("scale", scale).Msg("preference scores standardised")
	}
	log.Info().Dur("elapsed", time.Since(start)).Str("file", WeightsPath(dir, name)).Msg("expert trained")
	return nil
}

// calibrate returns the mean and standard deviation of the freshly trained preference model's
// raw scores over the images of calibPairs preference pairs.
func calibrate(ctx context.Context, backend backends.Backend, dir string, rng *rand.Rand) (offset, scale float64, err error) {
	m, err := LoadModel(backend, dir, HPS)
	if err != nil {
		return 0, 0, err
	}
	qs := make([]reward.Query, 0, 2*calibPairs)
	for range calibPairs {
		p, good, bad, err := preferencePair(rng)
		if err != nil {
			return 0, 0, err
		}
		qs = append(qs, reward.Query{Prompt: p, Image: good}, reward.Query{Prompt: p, Image: bad})
	}
	raws, err := m.Infer(ctx, qs)
	if err != nil {
		return 0, 0, err
	}
	var sum, sq float64
	for _, r := range raws {
		sum += *r.Score
		sq += *r.Score * *r.Score
	}
	n := float64(len(raws))
	offset = sum / n
	scale = math.Sqrt(max(sq/n-offset*offset, 0))
	if math.IsNaN(offset) || math.IsInf(offset, 0) || math.IsNaN(scale) || math.IsInf(scale, 0) {
		return 0, 0, fmt.Errorf("non-finite scores: mean %v, std %v", offset, scale)
	}
	if scale < 1e-6 {
		// A barely trained model can score everything alike; keep its scale rather than divide
		// by nothing.
		scale = 1
	}
	return offset, scale, nil
}

const calibPairs = 256

func patchTensor(imgs []image.Image) *tensors.Tensor {
	return tensors.FromFlatDataAndDimensions(patchBatch(imgs, len(imgs)), len(imgs), NumCells, PatchDim)
}

// detectorImage renders a random scene, degraded half of the time (never shifted: the labels
// are per cell).
func detectorImage(rng *rand.Rand) (scene.Scene, image.Image, error) {
	sc := randomScene(rng)
	img, err := render(sc)
	if err != nil {
		return sc, nil, err
	}
	if rng.IntN(2) == 0 {
		return sc, degradeNoShift(img, rng, 0.2+0.6*rng.Float64()), nil
	}
	return sc, img, nil
}

// degradeNoShift degrades without moving objects off their cells, so per-cell labels still hold.
func degradeNoShift(img *image.RGBA, rng *rand.Rand, strength float64) *image.RGBA {
	return degradeWith(img, rng, strength, false)
}

func detectorBatch(rng *rand.Rand) ([]any, error) {
	imgs := make([]image.Image, trainBatch)
	obj := make([]float32, trainBatch*NumCells)
	cls := [4][]int32{}
	for k := range cls {
		cls[k] = make([]int32, trainBatch*NumCells)
	}
	for i := range imgs {
		sc, img, err := detectorImage(rng)
		if err != nil {
			return nil, err
		}
		imgs[i] = img
		for _, o := range sc.Objects {
			c := i*NumCells + o.Row*Grid + o.Col
			obj[c] = 1
			cls[0][c] = int32(scene.Index(scene.Shapes, o.Shape))
			cls[1][c] = int32(scene.Index(scene.Colours, o.Colour))
			cls[2][c] = int32(scene.Index(scene.Sizes, o.Size))
			cls[3][c] = int32(scene.Index(scene.Textures, o.Texture))
		}
	}
	in := []any{patchTensor(imgs), tensors.FromFlatDataAndDimensions(obj, trainBatch, NumCells)}
	for k := range cls {
		in = append(in, tensors.FromFlatDataAndDimensions(cls[k], trainBatch, NumCells))
	}
	return in, nil
}

func detectorLoss(ctx *mlctx.Context, in []*Node) *Node {
	obj, shape, colour, size, texture := detectorHeads(ctx, in[0])
	l := bceLogits(obj, in[1])
	for k, logits := range []*Node{shape, colour, size, texture} {
		l = Add(l, maskedCE(logits, in[2+k], in[1]))
	}
	return l
}

func vqaBatch(rng *rand.Rand) ([]any, error) {
	imgs := make([]image.Image, trainBatch)
	attrs := make([]float32, trainBatch*numAttrs)
	labels := make([]float32, trainBatch)
	for i := range imgs {
		sc, img, err := detectorImage(rng)
		if err != nil {
			return nil, err
		}
		imgs[i] = img
		q, yes := question(sc, rng)
		questionAttrs(q, attrs[i*numAttrs:(i+1)*numAttrs])
		if yes {
			labels[i] = 1
		}
	}
	return []any{patchTensor(imgs), tensors.FromFlatDataAndDimensions(attrs, trainBatch, numAttrs), tensors.FromFlatDataAndDimensions(labels, trainBatch)}, nil
}

func vqaLoss(ctx *mlctx.Context, in []*Node) *Node {
	return bceLogits(vqaLogit(ctx, in[0], in[1]), in[2])
}

// alignedPair draws a prompt and an image with the exact answer to "does this image accurately
// represent the prompt?": a faithful clean render (yes, 45%), the faithful render visibly damaged
// (no, 15%), a clean render of a scene that differs in one respect (no, 30%) or a random scene
// (no, 10%: easy negatives that get training off its initial plateau).
func alignedPair(rng *rand.Rand) (prompts.Prompt, image.Image, bool, error) {
	p, err := drawPrompt(rng)
	if err != nil {
		return p, nil, false, err
	}
	var sc scene.Scene
	damaged := false
	switch k := rng.IntN(20); {
	case k < 12:
		if sc, err = faithfulScene(p, rng); err != nil {
			return p, nil, false, err
		}
		damaged = k >= 9
	case k < 18:
		sc = misalignedScene(p, rng)
	default:
		sc = randomScene(rng)
	}
	img, err := render(sc)
	if err != nil {
		return p, nil, false, err
	}
	if damaged {
		return p, degrade(img, rng, 0.3+0.7*rng.Float64()), false, nil
	}
	return p, img, p.Spec.Satisfied(sc), nil
}

func ormBatch(rng *rand.Rand, voc vocab) ([]any, error) {
	imgs := make([]image.Image, trainBatch)
	texts := make([]string, trainBatch)
	labels := make([]float32, trainBatch)
	for i := range imgs {
		p, img, ok, err := alignedPair(rng)
		if err != nil {
			return nil, err
		}
		imgs[i], texts[i] = img, p.Prompt
		if ok {
			labels[i] = 1
		}
	}
	w, mask := voc.textBatch(texts, trainBatch)
	return []any{patchTensor(imgs), w, mask, tensors.FromFlatDataAndDimensions(labels, trainBatch)}, nil
}

// preferencePair draws a prompt with a preferred image (a faithful render) and a worse one: the
// same render degraded, or a clean misaligned render.
func preferencePair(rng *rand.Rand) (prompts.Prompt, image.Image, image.Image, error) {
	p, err := drawPrompt(rng)
	if err != nil {
		return p, nil, nil, err
	}
	sc, err := faithfulScene(p, rng)
	if err != nil {
		return p, nil, nil, err
	}
	good, err := render(sc)
	if err != nil {
		return p, nil, nil, err
	}
	if rng.IntN(2) == 0 {
		return p, good, degrade(good, rng, 0.3+0.7*rng.Float64()), nil
	}
	bad, err := render(misalignedScene(p, rng))
	if err != nil {
		return p, nil, nil, err
	}
	return p, good, bad, nil
}

func hpsBatch(rng *rand.Rand, voc vocab) ([]any, error) {
	good := make([]image.Image, trainBatch)
	bad := make([]image.Image, trainBatch)
	texts := make([]string, trainBatch)
	for i := range good {
		p, g, b, err := preferencePair(rng)
		if err != nil {
			return nil, err
		}
		good[i], bad[i], texts[i] = g, b, p.Prompt
	}
	w, mask := voc.textBatch(texts, trainBatch)
	return []any{patchTensor(good), patchTensor(bad), w, mask}, nil
}
