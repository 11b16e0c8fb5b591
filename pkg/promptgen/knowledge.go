package promptgen

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// knowledgePrompt builds a prompt that names at least one shape, colour or count indirectly, in
// one of four forms:
//
//	a red shape with three corners          (an indirect shape, maybe one direct attribute)
//	a ball the color of grass               (an indirect colour, on a shape named either way)
//	as many squares as a triangle has corners (an indirect count)
//	a ball left of a red square             (a relation, at least one side indirect)
//
// Its metadata is resolved: nouns, attr_nouns, numeracy_info and spatial_info name the shapes,
// colours and counts the words stand for, so the reference's reward rules apply unchanged.
func knowledgePrompt(rng *rand.Rand) prompts.Prompt {
	p := prompts.Prompt{TaskType: prompts.Knowledge, Spec: &scene.Spec{}}
	switch rng.IntN(4) {
	case 0:
		ref := pickOne(rng, shapeRefs)
		o := scene.ObjSpec{Shape: ref.shape, Count: 1}
		adj := ""
		switch rng.IntN(4) {
		case 0:
			o.Colour = pickOne(rng, scene.Colours)
			adj = string(o.Colour)
		case 1:
			o.Texture = pickOne(rng, scene.Textures)
			adj = string(o.Texture)
		case 2:
			o.Size = pickOne(rng, scene.Sizes)
			adj = string(o.Size)
		}
		p.Prompt = refPhrase(adj, ref.text)
		p.Spec.Objects = []scene.ObjSpec{o}
	case 1:
		cref := pickOne(rng, colourRefs)
		o := scene.ObjSpec{Colour: cref.colour, Count: 1}
		var name string
		if rng.IntN(2) == 0 {
			ref := pickOne(rng, shapeRefs)
			o.Shape, name = ref.shape, ref.text
		} else {
			o.Shape = pickOne(rng, scene.Shapes)
			name = string(o.Shape)
		}
		p.Prompt = refPhrase("", name) + " the color of " + cref.text
		p.Spec.Objects = []scene.ObjSpec{o}
	case 2:
		cref := pickOne(rng, countRefs)
		o := scene.ObjSpec{Shape: pickOne(rng, scene.Shapes), Count: cref.count}
		noun := plurals[o.Shape]
		if rng.IntN(2) == 0 {
			o.Colour = pickOne(rng, scene.Colours)
			noun = string(o.Colour) + " " + noun
		}
		p.Prompt = fmt.Sprintf(cref.text, noun)
		p.Spec.Objects = []scene.ObjSpec{o}
		p.NumeracyInfo = []prompts.NumeracyInfo{{ObjName: string(o.Shape), Num: o.Count}}
	default:
		rels := append(slices.Clone(scene.SpatialRelations), scene.NonSpatialRelations...)
		rel := pickOne(rng, rels)
		indirect := rng.IntN(3) // 0: first side, 1: second side, 2: both
		var phrases []string
		for i := range 2 {
			o := scene.ObjSpec{Count: 1}
			var adj, name string
			if rng.IntN(3) == 0 {
				o.Colour = pickOne(rng, scene.Colours)
				adj = string(o.Colour)
			}
			if indirect == i || indirect == 2 {
				ref := pickOne(rng, shapeRefs)
				o.Shape, name = ref.shape, ref.text
			} else {
				o.Shape = pickOne(rng, scene.Shapes)
				name = string(o.Shape)
			}
			p.Spec.Objects = append(p.Spec.Objects, o)
			phrases = append(phrases, refPhrase(adj, name))
		}
		if p.Spec.Objects[0].Shape == p.Spec.Objects[1].Shape {
			// spatial_info names objects by noun, which must tell the two apart.
			return knowledgePrompt(rng)
		}
		p.Prompt = phrases[0] + " " + string(rel) + " " + phrases[1]
		p.Spec.Relations = []scene.RelSpec{{A: 0, B: 1, Rel: rel}}
		p.SpatialInfo = &prompts.SpatialInfo{Obj1: string(p.Spec.Objects[0].Shape), Obj2: string(p.Spec.Objects[1].Shape), Locality: string(rel)}
	}
	for _, o := range p.Spec.Objects {
		p.Nouns = append(p.Nouns, string(o.Shape))
		if len(adjectives(o)) > 0 {
			p.AttrNouns = append(p.AttrNouns, attrNoun(o))
		}
	}
	return p
}

// refPhrase puts an article and an optional adjective before a name: "a ball", "an orange kite".
func refPhrase(adj, name string) string {
	if adj != "" {
		return article(adj) + " " + adj + " " + name
	}
	return article(name) + " " + name
}
