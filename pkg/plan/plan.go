// Package plan is the semantic-level chain of thought of the scene world: a short canonical text
// that states every object of a scene with all its attributes and its cell, e.g.
//
//	large red solid circle a1, small blue striped square c2
//
// One phrase per object, "size colour texture shape cell". A cell is named by its column letter
// (a, b, ... from the left) and its row number (1, 2, ... from the top), so "c2" is row 1,
// column 2 counted from zero. The text fixes the scene completely, which is what makes it a
// plan: the token-level step only has to draw it. Relations and counts are implied by the cells
// and phrases; the order of the phrases carries no meaning.
//
// Canonical writes the normal form (objects in raster order of their cells), Ordered keeps the
// scene's object order (the order a prompt names them, what the base policy learns to write),
// Parse reads a plan back (also in any attribute order within a phrase), and Quality scores a
// sampled plan against a prompt's spec.
package plan

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// MaxGrid is the largest grid whose cells have names (scene.Config allows up to 16).
const MaxGrid = 16

// CellName names cell (row, col): column letter then 1-based row, "a1" at the top left.
func CellName(row, col int) string {
	return string(rune('a'+col)) + strconv.Itoa(row+1)
}

// ParseCell reads a cell name; ok is false for anything CellName cannot produce for MaxGrid.
func ParseCell(s string) (row, col int, ok bool) {
	if len(s) < 2 || s[0] < 'a' || s[0] >= 'a'+MaxGrid {
		return 0, 0, false
	}
	if s[1] == '0' {
		return 0, 0, false
	}
	r, err := strconv.Atoi(s[1:])
	if err != nil || r < 1 || r > MaxGrid {
		return 0, 0, false
	}
	return r - 1, int(s[0] - 'a'), true
}

// Phrase is one object's plan phrase: "large red solid circle a1".
func Phrase(o scene.Object) string {
	return fmt.Sprintf("%s %s %s %s %s", o.Size, o.Colour, o.Texture, o.Shape, CellName(o.Row, o.Col))
}

// Canonical returns the plan of a scene: one phrase per object in raster order of cells, joined
// by ", ". Two scenes with the same objects give the same text whatever their object order. A
// scene of at most scene.MaxObjects objects gives at most 4*5+3 = 23 words and commas.
func Canonical(sc scene.Scene) string {
	objs := slices.Clone(sc.Objects)
	slices.SortStableFunc(objs, func(a, b scene.Object) int {
		if a.Row != b.Row {
			return a.Row - b.Row
		}
		return a.Col - b.Col
	})
	return Ordered(scene.Scene{Objects: objs})
}

// Ordered writes a plan with the phrases in the scene's own object order. A scene drawn for a
// prompt's spec lists its objects in the order the prompt names them, so this is the plan that
// copies the prompt left to right, which a small policy learns much sooner than choosing the
// raster order (see docs/model.md); Parse, Quality and the image do not depend on the order.
func Ordered(sc scene.Scene) string {
	ph := make([]string, len(sc.Objects))
	for i, o := range sc.Objects {
		ph[i] = Phrase(o)
	}
	return strings.Join(ph, ", ")
}

// Fields splits a text into lower-case words, with each punctuation character a word of its own
// (as the tokenizer does).
func Fields(text string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for _, r := range strings.ToLower(text) {
		switch {
		case unicode.IsSpace(r):
			flush()
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '\'' || r == '-':
			cur.WriteRune(r)
		default:
			flush()
			out = append(out, string(r))
		}
	}
	flush()
	return out
}

// Parse reads a plan into a scene valid for cfg. Phrases are separated by commas; each must name
// exactly one size, colour, texture, shape and cell, in any order. A final full stop is allowed.
// Errors name the offending word or phrase.
func Parse(text string, cfg scene.Config) (scene.Scene, error) {
	words := Fields(text)
	if n := len(words); n > 0 && words[n-1] == "." {
		words = words[:n-1]
	}
	if len(words) == 0 {
		return scene.Scene{}, fmt.Errorf("plan: empty")
	}
	var phrases [][]string
	cur := []string{}
	for _, w := range words {
		if w == "," {
			phrases = append(phrases, cur)
			cur = []string{}
			continue
		}
		cur = append(cur, w)
	}
	phrases = append(phrases, cur)
	if len(phrases) > scene.MaxObjects {
		return scene.Scene{}, fmt.Errorf("plan: %d objects, at most %d", len(phrases), scene.MaxObjects)
	}
	var sc scene.Scene
	for i, ph := range phrases {
		o, err := parsePhrase(ph)
		if err != nil {
			return scene.Scene{}, fmt.Errorf("plan object %d %q: %w", i+1, strings.Join(ph, " "), err)
		}
		sc.Objects = append(sc.Objects, o)
	}
	if err := sc.Validate(cfg); err != nil {
		return scene.Scene{}, fmt.Errorf("plan: %w", err)
	}
	return sc, nil
}

func parsePhrase(ph []string) (scene.Object, error) {
	if len(ph) == 0 {
		return scene.Object{}, fmt.Errorf("empty phrase")
	}
	var o scene.Object
	cell := false
	set := func(kind string, dst *string, w string) error {
		if *dst != "" {
			return fmt.Errorf("second %s %q", kind, w)
		}
		*dst = w
		return nil
	}
	for _, w := range ph {
		var err error
		switch {
		case scene.Shape(w).Valid():
			err = set("shape", (*string)(&o.Shape), w)
		case scene.Colour(w).Valid():
			err = set("color", (*string)(&o.Colour), w)
		case scene.Size(w).Valid():
			err = set("size", (*string)(&o.Size), w)
		case scene.Texture(w).Valid():
			err = set("texture", (*string)(&o.Texture), w)
		default:
			r, c, ok := ParseCell(w)
			if !ok {
				return o, fmt.Errorf("unknown word %q", w)
			}
			if cell {
				return o, fmt.Errorf("second cell %q", w)
			}
			cell = true
			o.Row, o.Col = r, c
		}
		if err != nil {
			return o, err
		}
	}
	for _, m := range []struct {
		kind    string
		missing bool
	}{{"size", o.Size == ""}, {"color", o.Colour == ""}, {"texture", o.Texture == ""}, {"shape", o.Shape == ""}, {"cell", !cell}} {
		if m.missing {
			return o, fmt.Errorf("no %s", m.kind)
		}
	}
	return o, nil
}

// Quality is 1 when the plan parses into a scene that satisfies the prompt's spec exactly (right
// objects, no others, every relation), else 0; also 0 for a prompt without a spec. Cells are read
// on the largest grid, so the score does not depend on the run's canvas; QualityIn checks them
// against a given one.
func Quality(p prompts.Prompt, planText string) float64 {
	return QualityIn(p, planText, scene.Config{Grid: MaxGrid, Cell: 8})
}

// QualityIn is Quality with cells checked against cfg's grid.
func QualityIn(p prompts.Prompt, planText string, cfg scene.Config) float64 {
	if p.Spec == nil {
		return 0
	}
	sc, err := Parse(planText, cfg)
	if err != nil || !p.Spec.Satisfied(sc) {
		return 0
	}
	return 1
}

// Words returns every word a plan can contain: the attribute values, the cell names of MaxGrid,
// and the comma and full stop, sorted.
func Words() []string {
	var w []string
	for _, s := range scene.Shapes {
		w = append(w, string(s))
	}
	for _, c := range scene.Colours {
		w = append(w, string(c))
	}
	for _, s := range scene.Sizes {
		w = append(w, string(s))
	}
	for _, t := range scene.Textures {
		w = append(w, string(t))
	}
	for r := range MaxGrid {
		for c := range MaxGrid {
			w = append(w, CellName(r, c))
		}
	}
	w = append(w, ",", ".")
	slices.Sort(w)
	return w
}
