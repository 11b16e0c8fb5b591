package vq

import (
	"fmt"
	"image"
	"math"
	"math/rand/v2"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// Defaults of the shipped codebook. At the default canvas (4x4 cells of 8 px) a patch is a whole
// cell, and a cell shows either background or one of 5 shapes x 2 sizes x 4 textures x 6 colours =
// 240 patterns, so 241 codes reproduce every scene exactly and no smaller K can.
const (
	DefaultK      = 241
	DefaultPatch  = 8
	DefaultScenes = 2000
	DefaultIters  = 100
)

// PCG streams drawn from the training seed, so the training and held-out scenes never share draws.
const (
	streamTrain   = 1
	streamHeldOut = 2
)

// TrainOptions configure Train.
type TrainOptions struct {
	// K is the number of codes wanted. When the training patches hold fewer distinct values, the
	// codebook gets one code per distinct patch instead: more codes could only duplicate vectors,
	// which would waste output-head rows and make encoding ambiguous.
	K int `json:"k" yaml:"k"`
	// Patch is the patch side in pixels; it must divide the cell size.
	Patch int `json:"patch" yaml:"patch"`
	// Seed drives the training scenes and the k-means++ initialisation.
	Seed uint64 `json:"seed" yaml:"seed"`
	// Scenes is the number of random training scenes; the first ones are laid out so that every
	// object (shape, colour, size, texture) occurs at least once, so all cell patterns are seen
	// whatever the count.
	Scenes int `json:"scenes" yaml:"scenes"`
	// Iters bounds the Lloyd iterations; training stops earlier when assignments stop changing.
	Iters int `json:"iters" yaml:"iters"`
}

// DefaultTrainOptions returns the options of the shipped codebook for the given seed.
func DefaultTrainOptions(seed uint64) TrainOptions {
	return TrainOptions{K: DefaultK, Patch: DefaultPatch, Seed: seed, Scenes: DefaultScenes, Iters: DefaultIters}
}

// Validate checks the options.
func (o TrainOptions) Validate() error {
	switch {
	case o.K < 1:
		return fmt.Errorf("train codebook: k %d < 1", o.K)
	case o.Patch < 1:
		return fmt.Errorf("train codebook: patch %d < 1", o.Patch)
	case o.Scenes < 1:
		return fmt.Errorf("train codebook: scenes %d < 1", o.Scenes)
	case o.Iters < 0:
		return fmt.Errorf("train codebook: iters %d < 0", o.Iters)
	}
	return nil
}

// TrainStats describe a training run.
type TrainStats struct {
	RequestedK int `json:"requested_k"`
	K          int `json:"k"`
	Scenes     int `json:"scenes"`
	Patches    int `json:"patches"`
	Distinct   int `json:"distinct_patches"`
	Iters      int `json:"iters"`
	// MSE is the weighted k-means objective: mean squared error per channel value on the training
	// patches, on a [0,1] scale.
	MSE float64 `json:"train_mse"`
}

// Train learns a codebook by k-means (k-means++ initialisation, then Lloyd iterations) over the
// patches of rendered training scenes. It is deterministic in cfg and opt.
//
// Identical patches are merged into one weighted point first; weighted k-means over distinct
// patches is the same objective as k-means over all patches, and the scene world repeats patches
// (background above all) so heavily that this makes training take milliseconds at the default.
func Train(cfg scene.Config, opt TrainOptions) (*Codebook, TrainStats, error) {
	if err := opt.Validate(); err != nil {
		return nil, TrainStats{}, err
	}
	if err := checkGeometry(cfg, opt.Patch); err != nil {
		return nil, TrainStats{}, fmt.Errorf("train codebook: %w", err)
	}
	rng := rand.New(rand.NewPCG(opt.Seed, streamTrain))
	scenes, err := TrainingScenes(cfg, opt.Scenes, rng)
	if err != nil {
		return nil, TrainStats{}, fmt.Errorf("train codebook: %w", err)
	}
	points, weights, total, err := distinctPatches(cfg, opt.Patch, scenes)
	if err != nil {
		return nil, TrainStats{}, fmt.Errorf("train codebook: %w", err)
	}
	centers, iters, sse := kmeans(points, weights, opt.K, opt.Iters, rng)
	dim := opt.Patch * opt.Patch * Channels
	data := make([]float32, 0, len(centers)*dim)
	for _, c := range centers {
		for _, v := range c {
			data = append(data, float32(v))
		}
	}
	cb, err := newCodebook(cfg, opt.Patch, len(centers), opt.Seed, data)
	if err != nil {
		return nil, TrainStats{}, fmt.Errorf("train codebook: %w", err)
	}
	st := TrainStats{
		RequestedK: opt.K, K: len(centers), Scenes: len(scenes), Patches: total, Distinct: len(points),
		Iters: iters, MSE: sse / float64(total*dim) / (255 * 255),
	}
	return cb, st, nil
}

// AllObjects lists every (shape, colour, size, texture) combination once, in canonical order, at
// cell (0,0).
func AllObjects() []scene.Object {
	var out []scene.Object
	for _, sh := range scene.Shapes {
		for _, co := range scene.Colours {
			for _, sz := range scene.Sizes {
				for _, tx := range scene.Textures {
					out = append(out, scene.Object{Shape: sh, Colour: co, Size: sz, Texture: tx})
				}
			}
		}
	}
	return out
}

// TrainingScenes draws n scenes (more if n cannot cover every object): first every attribute
// combination in shuffled order, packed 1-4 per scene into random cells, then scenes of 0-4 random
// objects in random cells.
func TrainingScenes(cfg scene.Config, n int, rng *rand.Rand) ([]scene.Scene, error) {
	objs := AllObjects()
	rng.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })
	var out []scene.Scene
	for i := 0; i < len(objs); {
		m := min(1+rng.IntN(scene.MaxObjects), len(objs)-i)
		out = append(out, place(cfg, objs[i:i+m], rng))
		i += m
	}
	rest, err := RandomScenes(cfg, max(0, n-len(out)), rng)
	if err != nil {
		return nil, err
	}
	return append(out, rest...), nil
}

// RandomScenes draws n scenes of 0-4 objects with uniform attributes in distinct random cells.
func RandomScenes(cfg scene.Config, n int, rng *rand.Rand) ([]scene.Scene, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	out := make([]scene.Scene, 0, n)
	for range n {
		objs := make([]scene.Object, rng.IntN(scene.MaxObjects+1))
		for i := range objs {
			objs[i] = scene.Object{
				Shape:   scene.Shapes[rng.IntN(len(scene.Shapes))],
				Colour:  scene.Colours[rng.IntN(len(scene.Colours))],
				Size:    scene.Sizes[rng.IntN(len(scene.Sizes))],
				Texture: scene.Textures[rng.IntN(len(scene.Textures))],
			}
		}
		out = append(out, place(cfg, objs, rng))
	}
	return out, nil
}

// HeldOutScenes draws n random scenes from a stream of seed that training never uses.
func HeldOutScenes(cfg scene.Config, n int, seed uint64) ([]scene.Scene, error) {
	return RandomScenes(cfg, n, rand.New(rand.NewPCG(seed, streamHeldOut)))
}

func place(cfg scene.Config, objs []scene.Object, rng *rand.Rand) scene.Scene {
	cells := rng.Perm(cfg.Cells())
	sc := scene.Scene{Objects: make([]scene.Object, len(objs))}
	for i, o := range objs {
		o.Row, o.Col = cells[i]/cfg.Grid, cells[i]%cfg.Grid
		sc.Objects[i] = o
	}
	return sc
}

// distinctPatches renders the scenes and returns each distinct patch once (in order of first
// occurrence, for determinism) with its number of occurrences, and the total patch count.
func distinctPatches(cfg scene.Config, patch int, scenes []scene.Scene) ([][]float64, []float64, int, error) {
	index := map[string]int{}
	var points [][]float64
	var weights []float64
	total := 0
	dim := patch * patch * Channels
	key := make([]byte, dim)
	for i, sc := range scenes {
		img, err := scene.Render(cfg, sc)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("render training scene %d: %w", i, err)
		}
		side := cfg.ImageSize() / patch
		for py := range side {
			for px := range side {
				patchBytes(img, px*patch, py*patch, patch, key)
				total++
				if k, ok := index[string(key)]; ok {
					weights[k]++
					continue
				}
				index[string(key)] = len(points)
				p := make([]float64, dim)
				for j, b := range key {
					p[j] = float64(b)
				}
				points = append(points, p)
				weights = append(weights, 1)
			}
		}
	}
	return points, weights, total, nil
}

func patchBytes(img *image.RGBA, x0, y0, patch int, out []byte) {
	i := 0
	for y := range patch {
		off := img.PixOffset(x0, y0+y)
		for range patch {
			out[i], out[i+1], out[i+2] = img.Pix[off], img.Pix[off+1], img.Pix[off+2]
			i += Channels
			off += 4
		}
	}
}

func sqDist(a, b []float64) float64 {
	s := 0.0
	for i, x := range a {
		d := x - b[i]
		s += d * d
	}
	return s
}

// kmeans clusters weighted points into at most k centres and returns them, the Lloyd iterations
// run and the weighted sum of squared errors.
func kmeans(points [][]float64, w []float64, k, iters int, rng *rand.Rand) ([][]float64, int, float64) {
	centers := kmeansPP(points, w, k, rng)
	assign := make([]int, len(points))
	d2 := make([]float64, len(points))
	assignAll := func() bool {
		changed := false
		for i, p := range points {
			best, bd := 0, math.Inf(1)
			for c, ctr := range centers {
				if d := sqDist(p, ctr); d < bd {
					best, bd = c, d
				}
			}
			if best != assign[i] {
				changed = true
			}
			assign[i], d2[i] = best, bd
		}
		return changed
	}
	assignAll()
	run := 0
	for run < iters {
		run++
		dim := len(points[0])
		sums := make([][]float64, len(centers))
		mass := make([]float64, len(centers))
		for c := range sums {
			sums[c] = make([]float64, dim)
		}
		for i, p := range points {
			c := assign[i]
			mass[c] += w[i]
			for j, v := range p {
				sums[c][j] += w[i] * v
			}
		}
		taken := map[int]bool{}
		for c := range centers {
			if mass[c] > 0 {
				for j := range sums[c] {
					sums[c][j] /= mass[c]
				}
				centers[c] = sums[c]
				continue
			}
			// An empty cluster moves to the point that costs the most where it is; distinct points
			// are taken in turn so two empty clusters never land on one point.
			far, fd := -1, -1.0
			for i := range points {
				if !taken[i] && w[i]*d2[i] > fd {
					far, fd = i, w[i]*d2[i]
				}
			}
			taken[far] = true
			centers[c] = append([]float64(nil), points[far]...)
		}
		if !assignAll() {
			break
		}
	}
	sse := 0.0
	for i := range points {
		sse += w[i] * d2[i]
	}
	return centers, run, sse
}

// kmeansPP picks initial centres by k-means++ (each next centre drawn with probability proportional
// to weight x squared distance to the nearest chosen centre). It stops early once every point
// coincides with a centre, which is how K above the number of distinct patches shrinks to it.
func kmeansPP(points [][]float64, w []float64, k int, rng *rand.Rand) [][]float64 {
	draw := func(score []float64) int {
		total := 0.0
		for _, s := range score {
			total += s
		}
		r := rng.Float64() * total
		for i, s := range score {
			if r < s {
				return i
			}
			r -= s
		}
		// Rounding left r at the end: take the last point with positive score.
		for i := len(score) - 1; i >= 0; i-- {
			if score[i] > 0 {
				return i
			}
		}
		return 0
	}
	first := draw(w)
	centers := [][]float64{append([]float64(nil), points[first]...)}
	d2 := make([]float64, len(points))
	score := make([]float64, len(points))
	for i, p := range points {
		d2[i] = sqDist(p, centers[0])
	}
	for len(centers) < k {
		remaining := 0.0
		for i := range points {
			score[i] = w[i] * d2[i]
			remaining += score[i]
		}
		if remaining == 0 {
			break
		}
		next := draw(score)
		c := append([]float64(nil), points[next]...)
		centers = append(centers, c)
		for i, p := range points {
			d2[i] = min(d2[i], sqDist(p, c))
		}
	}
	return centers
}

// EvalStats measure how well a codebook reproduces images.
type EvalStats struct {
	Images int `json:"images"`
	// MSE is the mean squared error per channel value of decode(encode(img)) against img, on a
	// [0,1] scale.
	MSE float64 `json:"mse"`
	// Exact is the fraction of images reproduced pixel for pixel.
	Exact float64 `json:"exact"`
}

// Evaluate renders the scenes and measures the round trip through the codebook.
func Evaluate(cb *Codebook, scenes []scene.Scene) (EvalStats, error) {
	var st EvalStats
	if len(scenes) == 0 {
		return st, fmt.Errorf("evaluate codebook: no scenes")
	}
	sse, exact := 0.0, 0
	for i, sc := range scenes {
		img, err := scene.Render(cb.Config(), sc)
		if err != nil {
			return st, fmt.Errorf("evaluate codebook: scene %d: %w", i, err)
		}
		codes, err := cb.Encode(img)
		if err != nil {
			return st, fmt.Errorf("evaluate codebook: scene %d: %w", i, err)
		}
		back, err := cb.Decode(codes)
		if err != nil {
			return st, fmt.Errorf("evaluate codebook: scene %d: %w", i, err)
		}
		same := true
		for j := range img.Pix {
			if j%4 == 3 {
				continue
			}
			d := float64(img.Pix[j]) - float64(back.Pix[j])
			if d != 0 {
				same = false
				sse += d * d
			}
		}
		if same {
			exact++
		}
	}
	n := cb.ImageSize()
	st.Images = len(scenes)
	st.MSE = sse / float64(len(scenes)*n*n*Channels) / (255 * 255)
	st.Exact = float64(exact) / float64(len(scenes))
	return st, nil
}
