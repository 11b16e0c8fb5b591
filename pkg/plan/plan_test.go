package plan

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/promptgen"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
)

func obj(sz scene.Size, c scene.Colour, tx scene.Texture, sh scene.Shape, r, col int) scene.Object {
	return scene.Object{Shape: sh, Colour: c, Size: sz, Texture: tx, Row: r, Col: col}
}

// twoObjects lists a square at c2 before a circle at a1 (the reverse of raster order).
func twoObjects() scene.Scene {
	return scene.Scene{Objects: []scene.Object{
		obj(scene.Small, scene.Blue, scene.Striped, scene.Square, 1, 2),
		obj(scene.Large, scene.Red, scene.Solid, scene.Circle, 0, 0),
	}}
}

func TestCanonical(t *testing.T) {
	sc := twoObjects()
	want := "large red solid circle a1, small blue striped square c2"
	if got := Canonical(sc); got != want {
		t.Fatalf("got %q want %q", got, want)
	}
	swapped := scene.Scene{Objects: []scene.Object{sc.Objects[1], sc.Objects[0]}}
	if Canonical(swapped) != want {
		t.Fatal("object order changes the plan")
	}
	back, err := Parse(want, scene.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Objects, swapped.Objects) {
		t.Fatalf("parsed %v", back.Objects)
	}
	// Attribute order within a phrase, case and a final full stop do not matter.
	alt, err := Parse("Circle a1 RED large solid, c2 square small striped blue.", scene.DefaultConfig())
	if err != nil || !reflect.DeepEqual(alt.Objects, swapped.Objects) {
		t.Fatalf("%v %v", alt.Objects, err)
	}
}

// Ordered keeps the scene's object order; it describes the same scene as Canonical.
func TestOrdered(t *testing.T) {
	sc := twoObjects()
	want := "small blue striped square c2, large red solid circle a1"
	if got := Ordered(sc); got != want {
		t.Fatalf("got %q want %q", got, want)
	}
	back, err := Parse(want, scene.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if Canonical(back) != Canonical(sc) {
		t.Fatalf("ordered plan reads back as %q, want %q", Canonical(back), Canonical(sc))
	}
}

func TestCells(t *testing.T) {
	for r := range MaxGrid {
		for c := range MaxGrid {
			rr, cc, ok := ParseCell(CellName(r, c))
			if !ok || rr != r || cc != c {
				t.Fatalf("cell %d,%d -> %s -> %d,%d %v", r, c, CellName(r, c), rr, cc, ok)
			}
		}
	}
	for _, bad := range []string{"a0", "a17", "q1", "a", "1a", "a01", "ab"} {
		if _, _, ok := ParseCell(bad); ok {
			t.Fatalf("%q accepted", bad)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cfg := scene.DefaultConfig()
	cases := []struct{ text, want string }{
		{"", "empty"},
		{" . ", "empty"},
		{"large pink solid circle a1", `unknown word "pink"`},
		{"large red solid circle a1, small blue striped square", "no cell"},
		{"large red circle a1", "no texture"},
		{"large red blue solid circle a1", `second color "blue"`},
		{"large red solid circle a1 b2", `second cell "b2"`},
		{"large red solid circle e1", "outside 4x4 grid"},
		{"large red solid circle a1, small blue solid square a1", "already taken"},
		{"large red solid circle a1,, small blue solid square b1", "empty phrase"},
		{"large red solid circle a1; small blue solid square b1", `unknown word ";"`},
		{strings.Repeat("large red solid circle a1, ", 4) + "large red solid circle a1", "5 objects"},
	}
	for _, c := range cases {
		_, err := Parse(c.text, cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", c.text, err, c.want)
		}
	}
	if _, err := Parse("large red solid circle e1", scene.Config{Grid: 8, Cell: 8}); err != nil {
		t.Fatalf("cell e1 on an 8x8 grid: %v", err)
	}
}

func TestRoundTripRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cfg := scene.Config{Grid: 6, Cell: 8}
	for range 500 {
		n := 1 + rng.IntN(scene.MaxObjects)
		cells := rng.Perm(cfg.Cells())
		var sc scene.Scene
		for i := range n {
			sc.Objects = append(sc.Objects, scene.Object{
				Shape: scene.Shapes[rng.IntN(len(scene.Shapes))], Colour: scene.Colours[rng.IntN(len(scene.Colours))],
				Size: scene.Sizes[rng.IntN(len(scene.Sizes))], Texture: scene.Textures[rng.IntN(len(scene.Textures))],
				Row: cells[i] / cfg.Grid, Col: cells[i] % cfg.Grid,
			})
		}
		text := Canonical(sc)
		back, err := Parse(text, cfg)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if Canonical(back) != text {
			t.Fatalf("%q -> %q", text, Canonical(back))
		}
		if words := len(Fields(text)); words > 50 || words != 6*n-1 {
			t.Fatalf("%q: %d words", text, words)
		}
	}
}

func TestQuality(t *testing.T) {
	p := prompts.Prompt{Prompt: "a red circle left of a square", TaskType: prompts.Spatial, Spec: &scene.Spec{
		Objects:   []scene.ObjSpec{{Shape: scene.Circle, Colour: scene.Red, Count: 1}, {Shape: scene.Square, Count: 1}},
		Relations: []scene.RelSpec{{A: 0, B: 1, Rel: scene.LeftOf}},
	}}
	for text, want := range map[string]float64{
		"small red dotted circle a2, large green solid square c2":                           1,
		"large green solid square c2, small red dotted circle a2":                           1,
		"small red dotted circle c2, large green solid square a2":                           0, // relation fails
		"small red dotted circle a1, large green solid square b2":                           0, // diagonal
		"small blue dotted circle a2, large green solid square c2":                          0, // colour
		"small red dotted circle a2, large green solid square c2, small red solid cross d4": 0, // extra object
		"small red dotted circle a2":                                                        0, // missing object
		"small red dotted circle a2, large green square c2":                                 0, // malformed
	} {
		if got := Quality(p, text); got != want {
			t.Errorf("Quality(%q) = %v, want %v", text, got, want)
		}
	}
	if Quality(prompts.Prompt{Prompt: "x", TaskType: prompts.Object}, "large red solid circle a1") != 0 {
		t.Fatal("prompt without spec scored")
	}
	if QualityIn(p, "small red dotted circle a5, large green solid square c5", scene.DefaultConfig()) != 0 ||
		Quality(p, "small red dotted circle a5, large green solid square c5") != 1 {
		t.Fatal("grid bounds")
	}
}

// The hard budget: prompt words plus plan words stay within 33 for every benchmark prompt and any
// scene that satisfies it, leaving room for the policy's three special tokens within its default
// text part of 36 positions (model.DefaultConfig).
func TestPromptPlusPlanBudget(t *testing.T) {
	train, err := promptgen.GenerateSplit(promptgen.Train, promptgen.DefaultSeed, promptgen.DefaultTrainPerType)
	if err != nil {
		t.Fatal(err)
	}
	eval, err := promptgen.GenerateSplit(promptgen.Eval, promptgen.DefaultSeed, promptgen.DefaultEvalPerType)
	if err != nil {
		t.Fatal(err)
	}
	cfg := scene.DefaultConfig()
	rng := rand.New(rand.NewPCG(9, 9))
	longest := 0
	for _, p := range append(train, eval...) {
		// Every satisfying scene has Total objects, and a plan of n objects has 6n-1 words.
		bound := len(Fields(p.Prompt)) + 6*p.Spec.Total() - 1
		sc, err := p.Spec.Sample(cfg, rng)
		if err != nil {
			t.Fatal(err)
		}
		text := Canonical(sc)
		n := len(Fields(p.Prompt)) + len(Fields(text))
		if n != bound || bound > 33 {
			t.Fatalf("%q + %q: %d words (bound %d), limit 33", p.Prompt, text, n, bound)
		}
		if Quality(p, text) != 1 {
			t.Fatalf("plan %q of a satisfying scene scores 0 for %q", text, p.Prompt)
		}
		longest = max(longest, n)
	}
	t.Logf("longest prompt+plan: %d words", longest)
}

func TestWords(t *testing.T) {
	w := Words()
	if len(w) != 5+6+2+4+MaxGrid*MaxGrid+2 {
		t.Fatalf("%d words", len(w))
	}
	for i := 1; i < len(w); i++ {
		if w[i-1] >= w[i] {
			t.Fatalf("not sorted or duplicate at %q", w[i])
		}
	}
	if got := Fields("Large red, solid-ish circle's a1."); !reflect.DeepEqual(got, []string{"large", "red", ",", "solid-ish", "circle's", "a1", "."}) {
		t.Fatalf("%q", got)
	}
}
