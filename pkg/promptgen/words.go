package promptgen

import (
	"slices"
	"strings"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// plurals of the shape nouns.
var plurals = map[scene.Shape]string{
	scene.Circle:   "circles",
	scene.Square:   "squares",
	scene.Triangle: "triangles",
	scene.Diamond:  "diamonds",
	scene.Cross:    "crosses",
}

// numberWords spell the counts a scene can hold.
var numberWords = map[int]string{1: "one", 2: "two", 3: "three", 4: "four"}

// shapeRef names a shape indirectly; text follows the article ("a ball").
type shapeRef struct {
	text  string
	shape scene.Shape
}

var shapeRefs = []shapeRef{
	{"ball", scene.Circle},
	{"wheel", scene.Circle},
	{"coin", scene.Circle},
	{"shape with no corners", scene.Circle},
	{"shape with three corners", scene.Triangle},
	{"shape with three sides", scene.Triangle},
	{"box", scene.Square},
	{"tile", scene.Square},
	{"kite", scene.Diamond},
	{"shape like a kite", scene.Diamond},
	{"plus sign", scene.Cross},
	{"shape with four arms", scene.Cross},
}

// colourRef names a colour indirectly: "the color of <text>".
type colourRef struct {
	text   string
	colour scene.Colour
}

var colourRefs = []colourRef{
	{"grass", scene.Green},
	{"leaves", scene.Green},
	{"a frog", scene.Green},
	{"the sky", scene.Blue},
	{"the sea", scene.Blue},
	{"a stop sign", scene.Red},
	{"blood", scene.Red},
	{"a strawberry", scene.Red},
	{"the sun", scene.Yellow},
	{"a banana", scene.Yellow},
	{"a lemon", scene.Yellow},
	{"a carrot", scene.Orange},
	{"a pumpkin", scene.Orange},
	{"grapes", scene.Purple},
	{"a plum", scene.Purple},
	{"lavender", scene.Purple},
}

// countRef names a count indirectly; "%s" stands for the counted plural noun phrase.
type countRef struct {
	text  string
	count int
}

var countRefs = []countRef{
	{"as many %s as a triangle has corners", 3},
	{"as many %s as a triangle has sides", 3},
	{"as many %s as a square has corners", 4},
	{"as many %s as a square has sides", 4},
	{"as many %s as a diamond has corners", 4},
	{"as many %s as a cross has arms", 4},
	{"as many %s as a bicycle has wheels", 2},
	{"a pair of %s", 2},
}

// glue words that templates use around the tables' words.
var glue = []string{"a", "an", "and", "the", "color", "of", ","}

// Words returns every word (lower case, punctuation as its own word) that a generated prompt can
// contain, sorted. The tokenizer builds its vocabulary from it, so a word added to a template
// table must appear here, which this package's tests check over generated prompts.
func Words() []string {
	set := map[string]bool{}
	add := func(text string) {
		for _, w := range strings.Fields(strings.ReplaceAll(strings.ReplaceAll(text, "%s", " "), ",", " , ")) {
			set[w] = true
		}
	}
	for _, s := range scene.Shapes {
		add(string(s))
		add(plurals[s])
	}
	for _, c := range scene.Colours {
		add(string(c))
	}
	for _, s := range scene.Sizes {
		add(string(s))
	}
	for _, t := range scene.Textures {
		add(string(t))
	}
	for _, r := range append(slices.Clone(scene.SpatialRelations), scene.NonSpatialRelations...) {
		add(string(r))
	}
	for _, w := range numberWords {
		add(w)
	}
	for _, r := range shapeRefs {
		add(r.text)
	}
	for _, r := range colourRefs {
		add(r.text)
	}
	for _, r := range countRefs {
		add(r.text)
	}
	for _, g := range glue {
		add(g)
	}
	out := make([]string, 0, len(set))
	for w := range set {
		out = append(out, w)
	}
	slices.Sort(out)
	return out
}
