// Package promptgen writes the scene world's prompts: one generator per task type of the T2I-R1
// reference data (color, shape, texture, spatial, non, complex, numeracy, object) plus knowledge
// prompts that name shapes, colours and counts indirectly ("a ball the color of grass") so that
// only a semantic plan resolves them.
//
// Every prompt carries the reference metadata (nouns, attr_nouns, spatial_info, numeracy_info,
// with the reference's field names and value shapes, resolved for knowledge prompts) and the exact
// scene.Spec that the oracle and the reward experts check. The package also fixes the held-out
// split (heldout.go): training prompts and the scenes drawn for them (TrainingScene) never show a
// held-out combination, and every evaluation prompt asks for one. All draws come from a caller's
// seeded generator, so the committed benchmark files rebuild byte for byte.
package promptgen

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// item is one object group of a prompt under construction: its spec and the words that name it.
type item struct {
	spec scene.ObjSpec
	text string // noun phrase with its article or number, e.g. "a small red circle", "two squares"
}

// article returns "a" or "an" for the word that follows.
func article(next string) string {
	if next != "" && strings.ContainsRune("aeiou", rune(next[0])) {
		return "an"
	}
	return "a"
}

// adjectives lists an object spec's constrained attributes in English order (size, colour,
// texture).
func adjectives(o scene.ObjSpec) []string {
	var a []string
	if o.Size != "" {
		a = append(a, string(o.Size))
	}
	if o.Colour != "" {
		a = append(a, string(o.Colour))
	}
	if o.Texture != "" {
		a = append(a, string(o.Texture))
	}
	return a
}

// attrNoun is the reference's attr_noun for a spec: adjectives and noun without an article.
func attrNoun(o scene.ObjSpec) string {
	return strings.Join(append(adjectives(o), string(o.Shape)), " ")
}

// single names one object: "a small red circle".
func single(o scene.ObjSpec) string {
	n := attrNoun(o)
	return article(n) + " " + n
}

// counted names a group of Count objects: "two red circles", "one square" or "a square".
func counted(o scene.ObjSpec, rng *rand.Rand) string {
	adj := strings.Join(adjectives(o), " ")
	if adj != "" {
		adj += " "
	}
	if o.Count == 1 {
		if rng.IntN(2) == 0 {
			return "one " + adj + string(o.Shape)
		}
		return article(adj+string(o.Shape)) + " " + adj + string(o.Shape)
	}
	return numberWords[o.Count] + " " + adj + plurals[o.Shape]
}

// list joins phrases as English does: "x", "x and y", "x, y and z".
func list(ph []string) string {
	switch len(ph) {
	case 0:
		return ""
	case 1:
		return ph[0]
	}
	return strings.Join(ph[:len(ph)-1], ", ") + " and " + ph[len(ph)-1]
}

func pickOne[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

// distinctShapes draws n different shapes.
func distinctShapes(rng *rand.Rand, n int) []scene.Shape {
	perm := rng.Perm(len(scene.Shapes))
	out := make([]scene.Shape, n)
	for i := range out {
		out[i] = scene.Shapes[perm[i]]
	}
	return out
}

// Generate draws one prompt of the given task type. The draw is unfiltered: it may or may not
// contain a held-out combination (Split filters).
func Generate(taskType string, rng *rand.Rand) (prompts.Prompt, error) {
	switch taskType {
	case prompts.Color:
		return attrPrompt(taskType, rng, 1, 2, func(o *scene.ObjSpec) { o.Colour = pickOne(rng, scene.Colours) }), nil
	case prompts.Shape:
		return attrPrompt(taskType, rng, 1, 3, func(o *scene.ObjSpec) { o.Size = pickOne(rng, scene.Sizes) }), nil
	case prompts.Texture:
		return attrPrompt(taskType, rng, 1, 2, func(o *scene.ObjSpec) { o.Texture = pickOne(rng, scene.Textures) }), nil
	case prompts.Spatial:
		return relationPrompt(taskType, rng, scene.SpatialRelations, false), nil
	case prompts.NonSpatial:
		return relationPrompt(taskType, rng, scene.NonSpatialRelations, false), nil
	case prompts.Complex:
		return relationPrompt(taskType, rng, append(slices.Clone(scene.SpatialRelations), scene.NonSpatialRelations...), true), nil
	case prompts.Numeracy:
		return numeracyPrompt(rng), nil
	case prompts.Object:
		return objectPrompt(rng), nil
	case prompts.Knowledge:
		return knowledgePrompt(rng), nil
	}
	return prompts.Prompt{}, fmt.Errorf("promptgen: unknown task type %q", taskType)
}

// attrPrompt builds color, shape and texture prompts: lo..hi objects, each a shape with one
// attribute set by set. Shapes are the nouns the reference lists; the attribute binds to them in
// attr_nouns. Two objects never get the same (attribute, shape), so every noun phrase is distinct.
func attrPrompt(taskType string, rng *rand.Rand, lo, hi int, set func(*scene.ObjSpec)) prompts.Prompt {
	n := lo + rng.IntN(hi-lo+1)
	var objs []scene.ObjSpec
	for len(objs) < n {
		o := scene.ObjSpec{Shape: pickOne(rng, scene.Shapes), Count: 1}
		set(&o)
		if slices.Contains(objs, o) {
			continue
		}
		objs = append(objs, o)
	}
	var ph, nouns, attr []string
	for _, o := range objs {
		ph = append(ph, single(o))
		nouns = append(nouns, string(o.Shape))
		attr = append(attr, attrNoun(o))
	}
	return prompts.Prompt{
		Prompt:    list(ph),
		TaskType:  taskType,
		Nouns:     nouns,
		AttrNouns: attr,
		Spec:      &scene.Spec{Objects: objs},
	}
}

// relationPrompt builds spatial, non-spatial and complex prompts: "A rel B", the two shapes
// distinct so that spatial_info's nouns name them unambiguously. Spatial and non-spatial objects
// sometimes carry a colour (the reference's spatial prompts have bare nouns; colours add variety
// without attr_nouns, as there). Complex objects carry one or two attributes each, and a third
// object may follow unrelated: "a small red circle left of a dotted square and a blue triangle".
func relationPrompt(taskType string, rng *rand.Rand, rels []scene.Relation, complex bool) prompts.Prompt {
	n := 2
	if complex && rng.IntN(2) == 0 {
		n = 3
	}
	shapes := distinctShapes(rng, n)
	objs := make([]scene.ObjSpec, n)
	for i, s := range shapes {
		o := scene.ObjSpec{Shape: s, Count: 1}
		if complex {
			k := 1 + rng.IntN(2)
			for _, a := range rng.Perm(3)[:k] {
				switch a {
				case 0:
					o.Size = pickOne(rng, scene.Sizes)
				case 1:
					o.Colour = pickOne(rng, scene.Colours)
				case 2:
					o.Texture = pickOne(rng, scene.Textures)
				}
			}
		} else if rng.IntN(5) < 2 {
			o.Colour = pickOne(rng, scene.Colours)
		}
		objs[i] = o
	}
	rel := pickOne(rng, rels)
	text := single(objs[0]) + " " + string(rel) + " " + single(objs[1])
	if n == 3 {
		text += " and " + single(objs[2])
	}
	p := prompts.Prompt{
		Prompt:      text,
		TaskType:    taskType,
		SpatialInfo: &prompts.SpatialInfo{Obj1: string(shapes[0]), Obj2: string(shapes[1]), Locality: string(rel)},
		Spec:        &scene.Spec{Objects: objs, Relations: []scene.RelSpec{{A: 0, B: 1, Rel: rel}}},
	}
	for _, o := range objs {
		p.Nouns = append(p.Nouns, string(o.Shape))
		if complex {
			p.AttrNouns = append(p.AttrNouns, attrNoun(o))
		}
	}
	return p
}

// numeracyPrompt builds "three circles", "two red circles and a square": one or two kinds of
// distinct shapes, at most scene.MaxObjects in all, a kind sometimes coloured.
func numeracyPrompt(rng *rand.Rand) prompts.Prompt {
	var counts []int
	if rng.IntN(2) == 0 {
		counts = []int{1 + rng.IntN(scene.MaxObjects)}
	} else {
		a := 1 + rng.IntN(scene.MaxObjects-1)
		b := 1 + rng.IntN(scene.MaxObjects-a)
		counts = []int{a, b}
	}
	shapes := distinctShapes(rng, len(counts))
	p := prompts.Prompt{TaskType: prompts.Numeracy, Spec: &scene.Spec{}}
	var ph []string
	for i, s := range shapes {
		o := scene.ObjSpec{Shape: s, Count: counts[i]}
		if rng.IntN(2) == 0 {
			o.Colour = pickOne(rng, scene.Colours)
		}
		p.Spec.Objects = append(p.Spec.Objects, o)
		ph = append(ph, counted(o, rng))
		p.Nouns = append(p.Nouns, string(s))
		p.NumeracyInfo = append(p.NumeracyInfo, prompts.NumeracyInfo{ObjName: string(s), Num: counts[i]})
	}
	p.Prompt = list(ph)
	return p
}

// objectPrompt builds "a circle", "a circle and a square", "a circle, a cross and a square":
// plain distinct shapes (GenEval's single and two object tasks, plus three).
func objectPrompt(rng *rand.Rand) prompts.Prompt {
	n := 1 + rng.IntN(3)
	p := prompts.Prompt{TaskType: prompts.Object, Spec: &scene.Spec{}}
	var ph []string
	for _, s := range distinctShapes(rng, n) {
		o := scene.ObjSpec{Shape: s, Count: 1}
		p.Spec.Objects = append(p.Spec.Objects, o)
		ph = append(ph, single(o))
		p.Nouns = append(p.Nouns, string(s))
	}
	p.Prompt = list(ph)
	return p
}
