package oracle

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
	"github.com/bicot-rl/bicot/pkg/vq"
)

const (
	shippedCodebook = "../../models/codebook.vq"
	evalPrompts     = "../../data/prompts/eval.jsonl"
)

func obj(sh scene.Shape, co scene.Colour, n int) scene.ObjSpec {
	return scene.ObjSpec{Shape: sh, Colour: co, Count: n}
}

// taskSpecs builds specs in the shape of every task type's prompts.
func taskSpecs() map[string][]scene.Spec {
	rel := func(r scene.Relation) scene.Spec {
		return scene.Spec{
			Objects:   []scene.ObjSpec{obj(scene.Circle, scene.Red, 1), obj(scene.Square, "", 1)},
			Relations: []scene.RelSpec{{A: 0, B: 1, Rel: r}},
		}
	}
	specs := map[string][]scene.Spec{
		prompts.Color: {
			{Objects: []scene.ObjSpec{obj(scene.Circle, scene.Red, 1), obj(scene.Square, scene.Blue, 1)}},
			{Objects: []scene.ObjSpec{obj(scene.Triangle, scene.Yellow, 1)}},
		},
		prompts.Shape: {
			{Objects: []scene.ObjSpec{obj(scene.Diamond, "", 1), obj(scene.Cross, "", 1)}},
		},
		prompts.Texture: {
			{Objects: []scene.ObjSpec{
				{Shape: scene.Square, Texture: scene.Striped, Count: 1},
				{Shape: scene.Circle, Texture: scene.Dotted, Count: 1},
			}},
		},
		prompts.Complex: {
			{
				Objects: []scene.ObjSpec{
					{Shape: scene.Triangle, Colour: scene.Green, Size: scene.Large, Texture: scene.Outline, Count: 1},
					{Shape: scene.Cross, Colour: scene.Purple, Texture: scene.Solid, Count: 1},
					{Shape: scene.Circle, Size: scene.Small, Count: 1},
				},
				Relations: []scene.RelSpec{{A: 0, B: 1, Rel: scene.Above}},
			},
		},
		prompts.Numeracy: {
			{Objects: []scene.ObjSpec{obj(scene.Circle, "", 3)}},
			{Objects: []scene.ObjSpec{obj(scene.Square, scene.Orange, 2), obj(scene.Diamond, "", 1)}},
			{Objects: []scene.ObjSpec{obj(scene.Cross, "", 4)}},
		},
		prompts.Object: {
			{Objects: []scene.ObjSpec{obj(scene.Triangle, "", 1)}},
		},
		// "the colour of grass on a shape with three corners"
		prompts.Knowledge: {
			{Objects: []scene.ObjSpec{obj(scene.Triangle, scene.Green, 1)}},
		},
	}
	for _, r := range scene.SpatialRelations {
		specs[prompts.Spatial] = append(specs[prompts.Spatial], rel(r))
	}
	for _, r := range scene.NonSpatialRelations {
		specs[prompts.NonSpatial] = append(specs[prompts.NonSpatial], rel(r))
	}
	return specs
}

func taskPrompts() []prompts.Prompt {
	var out []prompts.Prompt
	specs := taskSpecs()
	for _, tt := range prompts.TaskTypes {
		for i, s := range specs[tt] {
			s := s
			out = append(out, prompts.Prompt{Prompt: fmt.Sprintf("%s prompt %d", tt, i), TaskType: tt, Spec: &s})
		}
	}
	return out
}

func render(t testing.TB, cfg scene.Config, sc scene.Scene) *image.RGBA {
	t.Helper()
	img, err := scene.Render(cfg, sc)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// inkBox is the bounding box of non-background pixels, computed without the parser.
func inkBox(img *image.RGBA) image.Rectangle {
	var box image.Rectangle
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if c := img.RGBAAt(x, y); c.R != 255 || c.G != 255 || c.B != 255 {
				box = box.Union(image.Rect(x, y, x+1, y+1))
			}
		}
	}
	return box
}

func TestEveryTemplateParsesBackExactly(t *testing.T) {
	objs := vq.AllObjects()
	for _, cfg := range []scene.Config{scene.DefaultConfig(), {Grid: 3, Cell: 12}, {Grid: 6, Cell: 16}} {
		p, err := NewParser(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if p.Tolerance() < 1 {
			t.Fatalf("%+v: tolerance %d", cfg, p.Tolerance())
		}
		for i, o := range objs {
			// Every position at the default canvas, a spread of them elsewhere.
			for cell := range cfg.Cells() {
				if cfg != scene.DefaultConfig() && (cell+i)%5 != 0 {
					continue
				}
				o.Row, o.Col = cell/cfg.Grid, cell%cfg.Grid
				img := render(t, cfg, scene.Scene{Objects: []scene.Object{o}})
				got, err := p.Parse(img)
				if err != nil {
					t.Fatal(err)
				}
				if len(got.Objects) != 1 || len(got.Unknown) != 0 || got.Objects[0].Object != o || got.Objects[0].Mismatches != 0 {
					t.Fatalf("%+v: %v parsed as %+v", cfg, o, got)
				}
				if want := inkBox(img); got.Objects[0].Box != want {
					t.Fatalf("%+v: %v box %v, want %v", cfg, o, got.Objects[0].Box, want)
				}
			}
		}
	}
}

func TestParseToleratesFewPixelErrors(t *testing.T) {
	cfg := scene.DefaultConfig()
	p, _ := NewParser(cfg)
	o := scene.Object{Shape: scene.Diamond, Colour: scene.Orange, Size: scene.Large, Texture: scene.Striped, Row: 1, Col: 2}
	img := render(t, cfg, scene.Scene{Objects: []scene.Object{o}})
	for k := range p.Tolerance() {
		img.SetRGBA(2*8+k, 8, color.RGBA{0, 0, 0, 255})
	}
	got, err := p.Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Objects) != 1 || got.Objects[0].Object != o || got.Objects[0].Mismatches != p.Tolerance() {
		t.Fatalf("%d corrupted pixels: %+v", p.Tolerance(), got)
	}
	// Blacking out half the cell leaves nothing recognisable: an unknown object.
	for y := range 4 {
		for x := range 8 {
			img.SetRGBA(2*8+x, 8+y, color.RGBA{0, 0, 0, 255})
		}
	}
	got, _ = p.Parse(img)
	if len(got.Objects) != 0 || len(got.Unknown) != 1 || got.Unknown[0] != (Cell{Row: 1, Col: 2}) || got.Count() != 1 {
		t.Fatalf("half-black cell: %+v", got)
	}
}

// violations returns scenes that break the spec in the ways a policy does: a wrong attribute,
// swapped relation sides, one object fewer, one matching object more, an extra object. Variants the
// spec still accepts (for instance swapping a symmetric relation) are left out.
func violations(t testing.TB, cfg scene.Config, spec scene.Spec, sc scene.Scene, rng *rand.Rand) map[string]scene.Scene {
	t.Helper()
	groups, ok := spec.Assign(sc)
	if !ok {
		t.Fatalf("faithful scene %v does not satisfy %+v", sc, spec)
	}
	clone := func() scene.Scene { return scene.Scene{Objects: append([]scene.Object(nil), sc.Objects...)} }
	free := func(s scene.Scene) (int, int) {
		used := map[int]bool{}
		for _, o := range s.Objects {
			used[o.Row*cfg.Grid+o.Col] = true
		}
		for _, c := range rng.Perm(cfg.Cells()) {
			if !used[c] {
				return c / cfg.Grid, c % cfg.Grid
			}
		}
		return -1, -1
	}
	out := map[string]scene.Scene{}
	for k, g := range groups {
		s := clone()
		o := &s.Objects[k]
		switch gs := spec.Objects[g]; {
		case gs.Colour != "":
			o.Colour = scene.Colours[(scene.Index(scene.Colours, o.Colour)+1)%len(scene.Colours)]
		case gs.Shape != "":
			o.Shape = scene.Shapes[(scene.Index(scene.Shapes, o.Shape)+1)%len(scene.Shapes)]
		case gs.Texture != "":
			o.Texture = scene.Textures[(scene.Index(scene.Textures, o.Texture)+1)%len(scene.Textures)]
		case gs.Size != "":
			o.Size = scene.Sizes[(scene.Index(scene.Sizes, o.Size)+1)%len(scene.Sizes)]
		default:
			continue
		}
		out["attribute"] = s
		break
	}
	for _, r := range spec.Relations {
		s := clone()
		a, b := -1, -1
		for k, g := range groups {
			if g == r.A {
				a = k
			}
			if g == r.B {
				b = k
			}
		}
		s.Objects[a].Row, s.Objects[b].Row = s.Objects[b].Row, s.Objects[a].Row
		s.Objects[a].Col, s.Objects[b].Col = s.Objects[b].Col, s.Objects[a].Col
		out["swap"] = s
	}
	fewer := clone()
	fewer.Objects = fewer.Objects[:len(fewer.Objects)-1]
	out["fewer"] = fewer
	if len(sc.Objects) < scene.MaxObjects {
		more := clone()
		o := sc.Objects[rng.IntN(len(sc.Objects))]
		o.Row, o.Col = free(more)
		more.Objects = append(more.Objects, o)
		out["more"] = more
		extra := clone()
		e := scene.Object{
			Shape:   scene.Shapes[rng.IntN(len(scene.Shapes))],
			Colour:  scene.Colours[rng.IntN(len(scene.Colours))],
			Size:    scene.Sizes[rng.IntN(len(scene.Sizes))],
			Texture: scene.Textures[rng.IntN(len(scene.Textures))],
		}
		e.Row, e.Col = free(extra)
		extra.Objects = append(extra.Objects, e)
		out["extra"] = extra
	}
	for name, s := range out {
		if spec.Satisfied(s) {
			delete(out, name)
		}
	}
	return out
}

// checkPrompts renders faithful samples and violations of each prompt and checks the scores: clean
// renders per task type >= 0.99 (each is in fact 1), violations <= PartialCredit and below the
// faithful render. It returns how many violations of each kind were checked.
func checkPrompts(t *testing.T, cfg scene.Config, ps []prompts.Prompt, samples int) map[string]int {
	t.Helper()
	p, err := NewParser(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep := NewReport()
	kinds := map[string]int{}
	for i, pr := range ps {
		if pr.Spec == nil {
			t.Fatalf("prompt %d %q has no spec", i, pr.Prompt)
		}
		rng := rand.New(rand.NewPCG(uint64(i), 11))
		for range samples {
			sc, err := pr.Spec.Sample(cfg, rng)
			if err != nil {
				t.Fatalf("prompt %d %q: %v", i, pr.Prompt, err)
			}
			faithful, err := p.Score(pr, render(t, cfg, sc))
			if err != nil {
				t.Fatal(err)
			}
			rep.Add(faithful)
			if faithful.Score < 0.99 {
				t.Errorf("prompt %q: clean render of %v scores %v (%+v)", pr.Prompt, sc, faithful.Score, faithful.Checks)
			}
			for kind, v := range violations(t, cfg, *pr.Spec, sc, rng) {
				kinds[kind]++
				res, err := p.Score(pr, render(t, cfg, v))
				if err != nil {
					t.Fatal(err)
				}
				if res.Score > PartialCredit || res.Score >= faithful.Score {
					t.Errorf("prompt %q: %s violation %v scores %v (faithful %v)", pr.Prompt, kind, v, res.Score, faithful.Score)
				}
			}
		}
	}
	for tt, s := range rep.Scores() {
		if s < 0.99 {
			t.Errorf("task type %s: mean clean score %v", tt, s)
		}
	}
	return kinds
}

func TestCleanRendersScoreOneAndViolationsFail(t *testing.T) {
	ps := taskPrompts()
	kinds := checkPrompts(t, scene.DefaultConfig(), ps, 15)
	for _, k := range []string{"attribute", "swap", "fewer", "more", "extra"} {
		if kinds[k] == 0 {
			t.Errorf("no %s violation was checked", k)
		}
	}
	// A larger canvas scores the same way.
	checkPrompts(t, scene.Config{Grid: 6, Cell: 16}, ps, 2)
}

func TestEvalPromptFile(t *testing.T) {
	ps, err := prompts.ReadFile(evalPrompts)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s not present", evalPrompts)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) == 0 {
		t.Fatalf("%s is empty", evalPrompts)
	}
	seen := map[string]bool{}
	for _, pr := range ps {
		seen[pr.TaskType] = true
	}
	for _, tt := range prompts.TaskTypes {
		if !seen[tt] {
			t.Errorf("%s has no %s prompts", evalPrompts, tt)
		}
	}
	kinds := checkPrompts(t, scene.DefaultConfig(), ps, 2)
	for _, k := range []string{"attribute", "swap", "fewer", "more", "extra"} {
		if kinds[k] == 0 {
			t.Errorf("no %s violation was checked", k)
		}
	}
	roundTrip(t, ps, 1)
}

// roundTrip checks that decode(encode(img)) through the shipped codebook keeps the oracle score per
// task type at >= 0.97 of the original's.
func roundTrip(t *testing.T, ps []prompts.Prompt, samples int) {
	t.Helper()
	cfg := scene.DefaultConfig()
	cb, err := vq.LoadFor(shippedCodebook, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := NewParser(cfg)
	orig, back := NewReport(), NewReport()
	for i, pr := range ps {
		rng := rand.New(rand.NewPCG(uint64(i), 13))
		for range samples {
			sc, err := pr.Spec.Sample(cfg, rng)
			if err != nil {
				t.Fatal(err)
			}
			img := render(t, cfg, sc)
			codes, err := cb.Encode(img)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := cb.Decode(codes)
			if err != nil {
				t.Fatal(err)
			}
			r0, err := p.Score(pr, img)
			if err != nil {
				t.Fatal(err)
			}
			r1, err := p.Score(pr, dec)
			if err != nil {
				t.Fatal(err)
			}
			orig.Add(r0)
			back.Add(r1)
		}
	}
	o, b := orig.Scores(), back.Scores()
	for tt, s := range o {
		if b[tt] < 0.97*s {
			t.Errorf("task type %s: round-trip score %v < 0.97 x %v", tt, b[tt], s)
		}
	}
}

func TestCodebookRoundTripKeepsScores(t *testing.T) {
	roundTrip(t, taskPrompts(), 10)
}

func TestGarbageImagesParse(t *testing.T) {
	cfg := scene.DefaultConfig()
	p, _ := NewParser(cfg)
	cb, err := vq.LoadFor(shippedCodebook, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pr := taskPrompts()[0]
	rng := rand.New(rand.NewPCG(1, 1))
	n := cfg.ImageSize()
	var imgs []image.Image
	for range 20 {
		noise := image.NewRGBA(image.Rect(0, 0, n, n))
		for i := range noise.Pix {
			noise.Pix[i] = uint8(rng.IntN(256))
		}
		imgs = append(imgs, noise)
		// What an untrained policy draws: uniform random codes.
		codes := make([]int, cb.TokensPerImage())
		for i := range codes {
			codes[i] = rng.IntN(cb.K())
		}
		dec, err := cb.Decode(codes)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, dec)
	}
	black := image.NewGray(image.Rect(0, 0, n, n))
	nrgba := image.NewNRGBA(image.Rect(0, 0, n, n)) // fully transparent
	pal := image.NewPaletted(image.Rect(0, 0, n, n), color.Palette{color.White, color.Black})
	big := image.NewRGBA(image.Rect(0, 0, 2*n, 2*n))
	offset := big.SubImage(image.Rect(n/2, n/2, n/2+n, n/2+n))
	imgs = append(imgs, black, nrgba, pal, offset)
	for i, img := range imgs {
		got, err := p.Parse(img)
		if err != nil {
			t.Fatalf("image %d: %v", i, err)
		}
		if got.Count() > cfg.Cells() {
			t.Fatalf("image %d: %d things in %d cells", i, got.Count(), cfg.Cells())
		}
		if err := got.Scene().Validate(cfg); err != nil && len(got.Objects) <= scene.MaxObjects {
			t.Fatalf("image %d: parsed scene invalid: %v", i, err)
		}
		res, err := p.Score(pr, img)
		if err != nil {
			t.Fatal(err)
		}
		if res.Score < 0 || res.Score > 1 || res.Checks.Extra < 0 || res.Checks.Found != got.Count() {
			t.Fatalf("image %d: %+v", i, res)
		}
		if i < 40 && i%2 == 0 && (len(got.Unknown) != cfg.Cells() || res.Score != 0) {
			t.Fatalf("noise image %d: %d unknown cells, score %v", i, len(got.Unknown), res.Score)
		}
	}
	// Empty, offset and palette images with only white are empty scenes.
	if got, _ := p.Parse(pal); got.Count() != 0 {
		t.Fatalf("white palette image: %+v", got)
	}
	if _, err := p.Parse(image.NewRGBA(image.Rect(0, 0, n+1, n))); err == nil {
		t.Fatal("wrong size accepted")
	}
	if _, err := p.Parse(nil); err == nil {
		t.Fatal("nil image accepted")
	}
	if _, err := NewParser(scene.Config{Grid: 4, Cell: 3}); err == nil {
		t.Fatal("cell 3 accepted")
	}
}

func TestScoreNeedsSpec(t *testing.T) {
	if _, err := ScoreScene(prompts.Prompt{Prompt: "a red circle", TaskType: prompts.Color}, scene.Scene{}); err == nil {
		t.Fatal("prompt without spec scored")
	}
	bad := scene.Spec{Objects: []scene.ObjSpec{{Shape: "hexagon", Count: 1}}}
	if _, err := ScoreScene(prompts.Prompt{Prompt: "a hexagon", Spec: &bad}, scene.Scene{}); err == nil {
		t.Fatal("invalid spec scored")
	}
}

// TestExtraObjectsCost is the reward-hacking case of the design: drawing more objects meets more
// constraints but must never pay.
func TestExtraObjectsCost(t *testing.T) {
	spec := scene.Spec{Objects: []scene.ObjSpec{obj(scene.Circle, scene.Red, 1)}}
	pr := prompts.Prompt{Prompt: "a red circle", TaskType: prompts.Color, Spec: &spec}
	o := func(sh scene.Shape, co scene.Colour, r, c int) scene.Object {
		return scene.Object{Shape: sh, Colour: co, Size: scene.Large, Texture: scene.Solid, Row: r, Col: c}
	}
	exact, _ := ScoreScene(pr, scene.Scene{Objects: []scene.Object{o(scene.Circle, scene.Red, 0, 0)}})
	if exact.Score != 1 || !exact.Checks.Exact || !exact.Checks.CountOK {
		t.Fatalf("exact: %+v", exact)
	}
	prev := exact.Score
	objs := []scene.Object{o(scene.Circle, scene.Red, 0, 0)}
	for k := 1; k <= 3; k++ {
		objs = append(objs, o(scene.Circle, scene.Red, k, k))
		res, _ := ScoreScene(pr, scene.Scene{Objects: objs})
		if res.Score > PartialCredit || res.Score >= prev || res.Checks.Extra != k || res.Checks.CountOK {
			t.Fatalf("%d extra red circles: %+v (previous score %v)", k, res, prev)
		}
		prev = res.Score
		// A reward's denser partial credit keeps the order and the evaluation's score.
		if d := res.WithPartialCredit(0.5); d != 0.5/float64(1+k) || res.WithPartialCredit(PartialCredit) != res.Score {
			t.Fatalf("%d extra red circles: partial credit 0.5 scores %v, want %v", k, d, 0.5/float64(1+k))
		}
	}
	if exact.WithPartialCredit(0.5) != 1 {
		t.Fatalf("exact image at partial credit 0.5: %v", exact.WithPartialCredit(0.5))
	}
	// An unknown cell is an extra object too.
	res, _ := ScoreParsed(pr, Parsed{Objects: []Detection{{Object: objs[0]}}, Unknown: []Cell{{1, 1}}})
	if res.Score > PartialCredit || res.Checks.Extra != 1 || res.Checks.Found != 2 {
		t.Fatalf("unknown cell: %+v", res)
	}
	missing, _ := ScoreScene(pr, scene.Scene{})
	if missing.Score != 0 || missing.Checks.Missing != 1 {
		t.Fatalf("empty image: %+v", missing)
	}
}

func TestReport(t *testing.T) {
	rep := NewReport()
	if len(rep.Scores()) != 0 || len(rep.Map()) != 1 {
		t.Fatalf("empty report: %v", rep.Map())
	}
	rep.Add(Result{TaskType: prompts.Color, Score: 1, Checks: Checks{Requested: 2, Found: 2, Bound: 2, Shapes: 2, CountOK: true, Exact: true}})
	rep.Add(Result{TaskType: prompts.Color, Score: 0.05, Checks: Checks{Requested: 2, Found: 3, Bound: 1, Shapes: 2, Extra: 2, Missing: 1}})
	rep.Add(Result{TaskType: prompts.Spatial, Score: 0, Checks: Checks{Requested: 2, Found: 2, Bound: 2, Shapes: 2, CountOK: true, Relations: 1}})
	s := rep.Scores()
	near := func(a, b float64) bool { return a-b < 1e-12 && b-a < 1e-12 }
	if !near(s[prompts.Color], 0.525) || s[prompts.Spatial] != 0 || !near(s["overall"], 1.05/3) || !near(s["overall_by_task"], 0.2625) {
		t.Fatalf("scores %v", s)
	}
	c := rep.Checks()
	if !near(c["exact_rate"], 1.0/3) || !near(c["count_ok_rate"], 2.0/3) || !near(c["extra_per_image"], 2.0/3) ||
		!near(c["bound_rate"], 5.0/6) || c["relation_rate"] != 0 || !near(c["objects_per_image"], 7.0/3) {
		t.Fatalf("checks %v", c)
	}
	if !near(c["count_ok_rate/color"], 0.5) || c["extra_per_image/color"] != 1 || c["exact_rate/spatial"] != 0 || c["exact_rate/color"] != 0.5 {
		t.Fatalf("per-task checks %v", c)
	}
	m := rep.Map()
	if m["n"] != 3 || m["n/color"] != 2 || m["n/spatial"] != 1 {
		t.Fatalf("map %v", m)
	}
	if tt := rep.TaskTypes(); len(tt) != 2 || tt[0] != prompts.Color || tt[1] != prompts.Spatial {
		t.Fatalf("task types %v", tt)
	}
}

func BenchmarkParseDefault(b *testing.B) {
	cfg := scene.DefaultConfig()
	p, _ := NewParser(cfg)
	sc, _ := taskSpecs()[prompts.Complex][0].Sample(cfg, rand.New(rand.NewPCG(1, 1)))
	img, _ := scene.Render(cfg, sc)
	for b.Loop() {
		if _, err := p.Parse(img); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzParse treats arbitrary bytes as the pixels of a default-size image: parsing and scoring must
// never fail or leave [0,1].
func FuzzParse(f *testing.F) {
	cfg := scene.DefaultConfig()
	p, _ := NewParser(cfg)
	pr := taskPrompts()[0]
	f.Add([]byte{0})
	f.Add([]byte{255, 255, 255, 255})
	f.Add([]byte{220, 30, 30, 255, 110, 15, 15, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		n := cfg.ImageSize()
		img := image.NewRGBA(image.Rect(0, 0, n, n))
		for i := range img.Pix {
			img.Pix[i] = data[i%len(data)]
		}
		got, err := p.Parse(img)
		if err != nil {
			t.Fatal(err)
		}
		res, err := ScoreParsed(pr, got)
		if err != nil || res.Score < 0 || res.Score > 1 {
			t.Fatalf("score %v, %v", res.Score, err)
		}
	})
}

// The mean of the task-type means is summed in a fixed order: the same report gives the same
// float every time, whatever Go's map iteration order (the evaluation promises equal numbers
// for equal inputs).
func TestReportScoresAreBitStable(t *testing.T) {
	r := NewReport()
	for i, tt := range []string{"color", "shape", "texture", "spatial", "non", "complex", "numeracy", "object", "knowledge"} {
		for k := 0; k < 3; k++ {
			r.Add(Result{TaskType: tt, Score: float64(i*7+k) / 30.0})
		}
	}
	want := r.Scores()["overall_by_task"]
	for range 200 {
		if got := r.Scores()["overall_by_task"]; got != want {
			t.Fatalf("overall_by_task %v, then %v", want, got)
		}
	}
}
