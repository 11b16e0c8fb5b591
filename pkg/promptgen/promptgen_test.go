package promptgen

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
)

func splits(t *testing.T) (train, eval []prompts.Prompt) {
	t.Helper()
	train, err := GenerateSplit(Train, DefaultSeed, DefaultTrainPerType)
	if err != nil {
		t.Fatal(err)
	}
	eval, err = GenerateSplit(Eval, DefaultSeed, DefaultEvalPerType)
	if err != nil {
		t.Fatal(err)
	}
	return train, eval
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("module root not found")
		}
		dir = parent
	}
}

func TestDeterministic(t *testing.T) {
	a, err := GenerateSplit(Eval, 7, 20)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateSplit(Eval, 7, 20)
	c, _ := GenerateSplit(Eval, 8, 20)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different prompts")
	}
	if reflect.DeepEqual(a, c) {
		t.Fatal("different seeds, same prompts")
	}
	if _, err := GenerateSplit("test", 1, 5); err == nil {
		t.Fatal("unknown split accepted")
	}
	if _, err := GenerateSplit(Train, 1, 0); err == nil {
		t.Fatal("zero per type accepted")
	}
	if _, err := Generate("colour", rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Fatal("unknown task type accepted")
	}
}

// The committed benchmark files are exactly what the generate command writes with the defaults.
func TestCommittedFilesUpToDate(t *testing.T) {
	root := moduleRoot(t)
	train, eval := splits(t)
	rl, err := GenerateRL(DefaultSeed, DefaultRLPerType, eval)
	if err != nil {
		t.Fatal(err)
	}
	for name, ps := range map[string][]prompts.Prompt{"train.jsonl": train, "eval.jsonl": eval, "rl.jsonl": rl} {
		path := filepath.Join(root, "data", "prompts", name)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (regenerate: go run ./coordinator prompts generate --seed 1 --out data/prompts)", err)
		}
		var want bytes.Buffer
		if err := prompts.Write(&want, ps); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("%s is stale: regenerate with go run ./coordinator prompts generate --seed 1 --out data/prompts", path)
		}
		if _, err := prompts.ReadFile(path); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSplitsHoldOut(t *testing.T) {
	train, eval := splits(t)
	if len(train) < 5000 {
		t.Fatalf("%d training prompts", len(train))
	}
	count := func(ps []prompts.Prompt) map[string]int {
		m := map[string]int{}
		for _, p := range ps {
			m[p.TaskType]++
		}
		return m
	}
	ct, ce := count(train), count(eval)
	for _, tt := range prompts.TaskTypes {
		if ct[tt] < 100 || ce[tt] < 100 {
			t.Fatalf("task type %s: %d train, %d eval", tt, ct[tt], ce[tt])
		}
	}
	cfg := scene.DefaultConfig()
	rng := rand.New(rand.NewPCG(3, 4))
	trainText := map[string]bool{}
	for _, p := range train {
		if why := SpecHeldOut(*p.Spec); why != "" {
			t.Fatalf("training prompt %q asks for held-out %s", p.Prompt, why)
		}
		for range 3 {
			sc, err := CleanScene(p, cfg, rng)
			if err != nil {
				t.Fatal(err)
			}
			if !p.Spec.Satisfied(sc) {
				t.Fatalf("training scene %v does not satisfy %q", sc, p.Prompt)
			}
			if why := SceneHeldOut(sc); why != "" {
				t.Fatalf("training scene %v for %q shows held-out %s", sc, p.Prompt, why)
			}
		}
		trainText[p.Prompt] = true
	}
	for _, p := range eval {
		if !HeldOutSpec(*p.Spec) {
			t.Fatalf("eval prompt %q asks for no held-out combination", p.Prompt)
		}
		if trainText[p.Prompt] {
			t.Fatalf("eval prompt %q is also a training prompt", p.Prompt)
		}
		if _, err := p.Spec.Sample(cfg, rng); err != nil {
			t.Fatalf("eval prompt %q cannot be drawn: %v", p.Prompt, err)
		}
		if _, err := TrainingScene(p, cfg, rng); err == nil {
			t.Fatalf("training scene drawn for held-out prompt %q", p.Prompt)
		}
	}
}

// RL prompts ask for held-out combinations, as eval prompts do, but never with an eval prompt's
// text; they are distinct, cover every task type whose held-out prompts outlast the eval split,
// and depend only on the seed.
func TestRLSplit(t *testing.T) {
	_, eval := splits(t)
	rl, err := GenerateRL(DefaultSeed, DefaultRLPerType, eval)
	if err != nil {
		t.Fatal(err)
	}
	evalText := map[string]bool{}
	for _, p := range eval {
		evalText[p.Prompt] = true
	}
	seen := map[string]bool{}
	perType := map[string]int{}
	cfg := scene.DefaultConfig()
	rng := rand.New(rand.NewPCG(5, 6))
	for _, p := range rl {
		if !HeldOutSpec(*p.Spec) {
			t.Fatalf("rl prompt %q asks for no held-out combination", p.Prompt)
		}
		if evalText[p.Prompt] {
			t.Fatalf("rl prompt %q is an eval prompt", p.Prompt)
		}
		if seen[p.Prompt] {
			t.Fatalf("rl prompt %q twice", p.Prompt)
		}
		if _, err := p.Spec.Sample(cfg, rng); err != nil {
			t.Fatalf("rl prompt %q cannot be drawn: %v", p.Prompt, err)
		}
		seen[p.Prompt] = true
		perType[p.TaskType]++
	}
	for _, tt := range prompts.TaskTypes {
		n := perType[tt]
		if n > DefaultRLPerType {
			t.Fatalf("task type %s: %d rl prompts, asked for %d", tt, n, DefaultRLPerType)
		}
		// Object prompts have 40 held-out texts and the eval split takes them all; texture's
		// held-out prompts are nearly all in eval too. Every other type fills most of its quota.
		switch tt {
		case "object":
			if n != 0 {
				t.Fatalf("object: %d rl prompts, want 0 (the eval split holds every held-out one)", n)
			}
		case "texture":
			if n < 20 {
				t.Fatalf("texture: %d rl prompts", n)
			}
		default:
			if n < DefaultRLPerType/2 {
				t.Fatalf("task type %s: %d rl prompts", tt, n)
			}
		}
	}
	// Not grouped by task type: a step's prompts mix types.
	if rl[0].TaskType == rl[1].TaskType && rl[1].TaskType == rl[2].TaskType && rl[2].TaskType == rl[3].TaskType {
		t.Fatalf("rl prompts not shuffled: %s x4", rl[0].TaskType)
	}
	again, _ := GenerateRL(DefaultSeed, DefaultRLPerType, eval)
	if !reflect.DeepEqual(rl, again) {
		t.Fatal("same seed, different rl prompts")
	}
	other, _ := GenerateRL(DefaultSeed+1, DefaultRLPerType, eval)
	if reflect.DeepEqual(rl, other) {
		t.Fatal("different seeds, same rl prompts")
	}
	if _, err := GenerateRL(DefaultSeed, 0, eval); err == nil {
		t.Fatal("zero per type accepted")
	}
	// The exclusion is by text, whatever the excluded file holds.
	more, err := GenerateRL(DefaultSeed, 3, append(slices.Clone(eval), rl...))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range more {
		if seen[p.Prompt] || evalText[p.Prompt] {
			t.Fatalf("excluded prompt %q drawn", p.Prompt)
		}
	}
}

// Every prompt's reference metadata agrees with its spec, with the reference's field names.
func TestMetadataMatchesSpec(t *testing.T) {
	train, eval := splits(t)
	words := Words()
	for _, p := range append(train, eval...) {
		if err := p.Validate(); err != nil {
			t.Fatalf("%q: %v", p.Prompt, err)
		}
		sp := p.Spec
		if sp == nil {
			t.Fatalf("%q: no spec", p.Prompt)
		}
		if n := sp.Total(); n < 1 || n > scene.MaxObjects {
			t.Fatalf("%q: %d objects", p.Prompt, n)
		}
		var nouns []string
		for _, o := range sp.Objects {
			if o.Shape == "" {
				t.Fatalf("%q: object without a shape", p.Prompt)
			}
			nouns = append(nouns, string(o.Shape))
		}
		if !slices.Equal(p.Nouns, nouns) {
			t.Fatalf("%q: nouns %v, spec shapes %v", p.Prompt, p.Nouns, nouns)
		}
		for _, an := range p.AttrNouns {
			parts := strings.Fields(an)
			if len(parts) < 2 || !slices.Contains(nouns, parts[len(parts)-1]) {
				t.Fatalf("%q: attr_noun %q", p.Prompt, an)
			}
		}
		switch p.TaskType {
		case prompts.Color, prompts.Shape, prompts.Texture, prompts.Complex:
			if len(p.AttrNouns) != len(sp.Objects) {
				t.Fatalf("%q: attr_nouns %v", p.Prompt, p.AttrNouns)
			}
			for i, o := range sp.Objects {
				if p.AttrNouns[i] != attrNoun(o) || o.Count != 1 {
					t.Fatalf("%q: attr_noun %q for %+v", p.Prompt, p.AttrNouns[i], o)
				}
			}
		}
		if p.TaskType == prompts.Numeracy && len(p.NumeracyInfo) != len(sp.Objects) {
			t.Fatalf("%q: numeracy_info %v", p.Prompt, p.NumeracyInfo)
		}
		for i, n := range p.NumeracyInfo {
			if n.ObjName != string(sp.Objects[i].Shape) || n.Num != sp.Objects[i].Count {
				t.Fatalf("%q: numeracy_info %v", p.Prompt, p.NumeracyInfo)
			}
		}
		needRel := p.TaskType == prompts.Spatial || p.TaskType == prompts.NonSpatial || p.TaskType == prompts.Complex
		if needRel && (p.SpatialInfo == nil || len(sp.Relations) != 1) {
			t.Fatalf("%q: no relation", p.Prompt)
		}
		if si := p.SpatialInfo; si != nil {
			r := sp.Relations[0]
			rel, err := scene.ParseRelation(si.Locality)
			if err != nil || rel != r.Rel || si.Obj1 != string(sp.Objects[r.A].Shape) || si.Obj2 != string(sp.Objects[r.B].Shape) || si.Obj1 == si.Obj2 {
				t.Fatalf("%q: spatial_info %+v for %+v", p.Prompt, si, r)
			}
			if p.TaskType == prompts.Spatial && !slices.Contains(scene.SpatialRelations, rel) ||
				p.TaskType == prompts.NonSpatial && !slices.Contains(scene.NonSpatialRelations, rel) {
				t.Fatalf("%q: relation %q for task type %s", p.Prompt, rel, p.TaskType)
			}
		}
		for _, w := range strings.Fields(strings.ReplaceAll(p.Prompt, ",", " , ")) {
			if _, ok := slices.BinarySearch(words, w); !ok {
				t.Fatalf("%q: word %q missing from Words()", p.Prompt, w)
			}
		}
		if n := len(strings.Fields(p.Prompt)); n > 17 {
			t.Fatalf("%q: %d words", p.Prompt, n)
		}
	}
}

// Knowledge prompts resolve to the intended shapes, colours and counts.
func TestKnowledgeResolution(t *testing.T) {
	want := map[string]scene.ObjSpec{
		"a shape with three corners":                    {Shape: scene.Triangle, Count: 1},
		"a ball the color of grass":                     {Shape: scene.Circle, Colour: scene.Green, Count: 1},
		"as many squares as a triangle has corners":     {Shape: scene.Square, Count: 3},
		"a square the color of the sky":                 {Shape: scene.Square, Colour: scene.Blue, Count: 1},
		"a plus sign the color of a stop sign":          {Shape: scene.Cross, Colour: scene.Red, Count: 1},
		"a pair of red circles":                         {Shape: scene.Circle, Colour: scene.Red, Count: 2},
		"as many diamonds as a cross has arms":          {Shape: scene.Diamond, Count: 4},
		"a kite the color of the sun":                   {Shape: scene.Diamond, Colour: scene.Yellow, Count: 1},
		"a striped shape with three sides":              {Shape: scene.Triangle, Texture: scene.Striped, Count: 1},
		"a shape with no corners the color of a carrot": {Shape: scene.Circle, Colour: scene.Orange, Count: 1},
		"as many crosses as a bicycle has wheels":       {Shape: scene.Cross, Count: 2},
		"a box the color of grapes":                     {Shape: scene.Square, Colour: scene.Purple, Count: 1},
	}
	found := map[string]bool{}
	rng := rand.New(rand.NewPCG(11, 12))
	for range 200000 {
		p := knowledgePrompt(rng)
		if w, ok := want[p.Prompt]; ok {
			found[p.Prompt] = true
			if len(p.Spec.Objects) != 1 || p.Spec.Objects[0] != w {
				t.Fatalf("%q resolved to %+v, want %+v", p.Prompt, p.Spec.Objects, w)
			}
		}
		if len(found) == len(want) {
			break
		}
	}
	for text := range want {
		if !found[text] {
			t.Errorf("generator never produced %q", text)
		}
	}
	// Every knowledge prompt names something indirectly.
	_, eval := splits(t)
	for _, p := range eval {
		if p.TaskType != prompts.Knowledge {
			continue
		}
		indirect := strings.Contains(p.Prompt, "color of") || strings.HasPrefix(p.Prompt, "as many") || strings.HasPrefix(p.Prompt, "a pair")
		for _, r := range shapeRefs {
			indirect = indirect || strings.Contains(" "+p.Prompt+" ", " "+r.text+" ")
		}
		if !indirect {
			t.Fatalf("knowledge prompt %q names everything directly", p.Prompt)
		}
	}
}

func TestHeldOutPredicates(t *testing.T) {
	if !HeldOutColourShape(scene.Blue, scene.Circle) || HeldOutColourShape(scene.Red, scene.Circle) {
		t.Fatal("colour-shape")
	}
	if !HeldOutTextureShape(scene.Striped, scene.Triangle) || !HeldOutSizeShape(scene.Small, scene.Circle) {
		t.Fatal("texture/size-shape")
	}
	if !HeldOutPair(scene.Cross, scene.Circle) || HeldOutPair(scene.Circle, scene.Square) {
		t.Fatal("pairs")
	}
	// The converse phrasing of a held-out layout is the same layout.
	if !HeldOutTriple(scene.Circle, scene.Above, scene.Square) || !HeldOutTriple(scene.Square, scene.Below, scene.Circle) ||
		!HeldOutTriple(scene.Cross, scene.NextTo, scene.Square) || HeldOutTriple(scene.Square, scene.Above, scene.Circle) {
		t.Fatal("triples")
	}
	obj := func(sh scene.Shape, r, c int) scene.Object {
		return scene.Object{Shape: sh, Colour: scene.Red, Size: scene.Large, Texture: scene.Solid, Row: r, Col: c}
	}
	above := scene.Scene{Objects: []scene.Object{obj(scene.Square, 3, 1), obj(scene.Circle, 0, 1)}}
	if why := SceneHeldOut(above); why != "circle above square" {
		t.Fatalf("circle above square: %q", why)
	}
	diagonal := scene.Scene{Objects: []scene.Object{obj(scene.Square, 1, 1), obj(scene.Circle, 0, 0)}}
	if HeldOutScene(diagonal) {
		t.Fatalf("diagonal placement is held out: %s", SceneHeldOut(diagonal))
	}
	set := HeldOut()
	set.ColourShape[0][0] = "pink"
	if !HeldOutColourShape(scene.Red, scene.Cross) {
		t.Fatal("HeldOut returned the package's own table")
	}
}

// Open attributes are drawn around the held-out pairs; the spec's own stay as asked.
func TestCleanSceneAvoidsHeldOut(t *testing.T) {
	cfg := scene.DefaultConfig()
	rng := rand.New(rand.NewPCG(5, 6))
	p := prompts.Prompt{Prompt: "two circles and two squares", TaskType: prompts.Numeracy,
		Spec: &scene.Spec{Objects: []scene.ObjSpec{{Shape: scene.Circle, Count: 2}, {Shape: scene.Square, Count: 2}}}}
	colours := map[scene.Colour]bool{}
	for range 300 {
		sc, err := CleanScene(p, cfg, rng)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range sc.Objects {
			colours[o.Colour] = true
			if HeldOutObject(o) {
				t.Fatalf("held-out object %v", o)
			}
		}
		if HeldOutScene(sc) || !p.Spec.Satisfied(sc) {
			t.Fatalf("scene %v", sc.Objects)
		}
	}
	if len(colours) != len(scene.Colours) {
		t.Fatalf("open colour drew only %v", colours)
	}
	held := prompts.Prompt{Prompt: "a blue circle", TaskType: prompts.Color,
		Spec: &scene.Spec{Objects: []scene.ObjSpec{{Shape: scene.Circle, Colour: scene.Blue, Count: 1}}}}
	if _, err := CleanScene(held, cfg, rng); err == nil || !strings.Contains(err.Error(), "held-out blue circle") {
		t.Fatalf("err %v", err)
	}
	if _, err := CleanScene(prompts.Prompt{Prompt: "x", TaskType: prompts.Object}, cfg, rng); err == nil {
		t.Fatal("prompt without spec accepted")
	}
}

// Pretraining scenes never answer a held-out request, but their open attributes may form a
// held-out combination: the base policy must have seen every code it may be asked to draw.
func TestTrainingSceneShowsHeldOutCodes(t *testing.T) {
	cfg := scene.DefaultConfig()
	rng := rand.New(rand.NewPCG(7, 8))
	p := prompts.Prompt{Prompt: "a triangle and a square", TaskType: prompts.Object,
		Spec: &scene.Spec{Objects: []scene.ObjSpec{{Shape: scene.Triangle, Count: 1}, {Shape: scene.Square, Count: 1}}}}
	shown := 0
	for range 300 {
		sc, err := TrainingScene(p, cfg, rng)
		if err != nil {
			t.Fatal(err)
		}
		if !p.Spec.Satisfied(sc) {
			t.Fatalf("scene %v does not satisfy the spec", sc.Objects)
		}
		if HeldOutScene(sc) {
			shown++
		}
	}
	if shown == 0 {
		t.Fatal("open attributes never formed a held-out combination")
	}
	held := prompts.Prompt{Prompt: "a blue circle", TaskType: prompts.Color,
		Spec: &scene.Spec{Objects: []scene.ObjSpec{{Shape: scene.Circle, Colour: scene.Blue, Count: 1}}}}
	if _, err := TrainingScene(held, cfg, rng); err == nil || !strings.Contains(err.Error(), "held-out blue circle") {
		t.Fatalf("err %v", err)
	}
}
