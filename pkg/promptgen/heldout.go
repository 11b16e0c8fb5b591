package promptgen

import (
	"fmt"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// The held-out split. Training prompts, and the scenes used to pretrain on them, never show any
// of these combinations; every evaluation prompt asks for at least one. Each shape keeps most of
// its colours, textures and sizes, and each held-out pair of shapes still meets in other ways,
// so every attribute value is learnt and only its binding to the held-out partner is new.
var (
	heldColourShape = [][2]string{
		{string(scene.Red), string(scene.Cross)},
		{string(scene.Green), string(scene.Triangle)},
		{string(scene.Blue), string(scene.Circle)},
		{string(scene.Yellow), string(scene.Square)},
		{string(scene.Purple), string(scene.Diamond)},
	}
	heldTextureShape = [][2]string{
		{string(scene.Striped), string(scene.Triangle)},
		{string(scene.Dotted), string(scene.Square)},
		{string(scene.Outline), string(scene.Cross)},
	}
	heldSizeShape = [][2]string{
		{string(scene.Small), string(scene.Circle)},
		{string(scene.Large), string(scene.Diamond)},
	}
	// heldPairs are shapes that never appear together in one training scene.
	heldPairs = [][2]scene.Shape{
		{scene.Circle, scene.Cross},
		{scene.Triangle, scene.Diamond},
	}
	// heldTriples are (A, relation, B) layouts: no training scene has an A in that relation to a
	// B. The converse phrasing (B right of A for A left of B) is the same layout and equally held
	// out.
	heldTriples = []Triple{
		{scene.Circle, scene.Above, scene.Square},
		{scene.Triangle, scene.LeftOf, scene.Circle},
		{scene.Square, scene.Below, scene.Diamond},
		{scene.Cross, scene.RightOf, scene.Triangle},
		{scene.Square, scene.NextTo, scene.Cross},
	}
)

// Triple is a relation between two shapes: A Rel B.
type Triple struct {
	A   scene.Shape
	Rel scene.Relation
	B   scene.Shape
}

func (t Triple) String() string { return fmt.Sprintf("%s %s %s", t.A, t.Rel, t.B) }

// HeldOutSet lists the held-out combinations.
type HeldOutSet struct {
	ColourShape  [][2]string      // {colour, shape}
	TextureShape [][2]string      // {texture, shape}
	SizeShape    [][2]string      // {size, shape}
	ShapePairs   [][2]scene.Shape // shapes never together in a training scene
	Triples      []Triple         // layouts never shown in training
}

// HeldOut returns a copy of the held-out combinations.
func HeldOut() HeldOutSet {
	return HeldOutSet{
		ColourShape:  clonePairs(heldColourShape),
		TextureShape: clonePairs(heldTextureShape),
		SizeShape:    clonePairs(heldSizeShape),
		ShapePairs:   append([][2]scene.Shape(nil), heldPairs...),
		Triples:      append([]Triple(nil), heldTriples...),
	}
}

func clonePairs(p [][2]string) [][2]string { return append([][2]string(nil), p...) }

func inPairs(list [][2]string, a, b string) bool {
	for _, p := range list {
		if p[0] == a && p[1] == b {
			return true
		}
	}
	return false
}

// HeldOutColourShape reports whether colour c on shape s is held out.
func HeldOutColourShape(c scene.Colour, s scene.Shape) bool {
	return inPairs(heldColourShape, string(c), string(s))
}

// HeldOutTextureShape reports whether texture t on shape s is held out.
func HeldOutTextureShape(t scene.Texture, s scene.Shape) bool {
	return inPairs(heldTextureShape, string(t), string(s))
}

// HeldOutSizeShape reports whether size z of shape s is held out.
func HeldOutSizeShape(z scene.Size, s scene.Shape) bool {
	return inPairs(heldSizeShape, string(z), string(s))
}

// HeldOutPair reports whether shapes a and b (in either order) never meet in a training scene.
func HeldOutPair(a, b scene.Shape) bool {
	for _, p := range heldPairs {
		if (p[0] == a && p[1] == b) || (p[0] == b && p[1] == a) {
			return true
		}
	}
	return false
}

// HeldOutTriple reports whether "a rel b" is a held-out layout, in either phrasing.
func HeldOutTriple(a scene.Shape, rel scene.Relation, b scene.Shape) bool {
	for _, t := range heldTriples {
		if (t.A == a && t.Rel == rel && t.B == b) || (t.A == b && t.Rel == rel.Converse() && t.B == a) {
			return true
		}
	}
	return false
}

// HeldOutObject reports whether one object shows a held-out attribute pair.
func HeldOutObject(o scene.Object) bool {
	return HeldOutColourShape(o.Colour, o.Shape) || HeldOutTextureShape(o.Texture, o.Shape) || HeldOutSizeShape(o.Size, o.Shape)
}

// SceneHeldOut returns the first held-out combination a scene shows, or "" when it shows none:
// an object's attribute pair, two shapes together, or two objects in a held-out layout.
func SceneHeldOut(sc scene.Scene) string {
	for _, o := range sc.Objects {
		if why := objHeldOut(o.Colour, o.Texture, o.Size, o.Shape); why != "" {
			return why
		}
	}
	for i, a := range sc.Objects {
		for j, b := range sc.Objects {
			if i == j {
				continue
			}
			if i < j && HeldOutPair(a.Shape, b.Shape) {
				return fmt.Sprintf("%s with %s", a.Shape, b.Shape)
			}
			for _, t := range heldTriples {
				if t.A == a.Shape && t.B == b.Shape && t.Rel.Holds(a, b) {
					return t.String()
				}
			}
		}
	}
	return ""
}

// HeldOutScene reports whether the scene shows any held-out combination.
func HeldOutScene(sc scene.Scene) bool { return SceneHeldOut(sc) != "" }

func objHeldOut(c scene.Colour, t scene.Texture, z scene.Size, s scene.Shape) string {
	switch {
	case c != "" && HeldOutColourShape(c, s):
		return fmt.Sprintf("%s %s", c, s)
	case t != "" && HeldOutTextureShape(t, s):
		return fmt.Sprintf("%s %s", t, s)
	case z != "" && HeldOutSizeShape(z, s):
		return fmt.Sprintf("%s %s", z, s)
	}
	return ""
}

// SpecHeldOut returns the first held-out combination the spec asks for explicitly, or "": a
// constrained attribute pair, two constrained shapes together, or a relation between constrained
// shapes.
func SpecHeldOut(sp scene.Spec) string {
	for _, o := range sp.Objects {
		if o.Shape == "" {
			continue
		}
		if why := objHeldOut(o.Colour, o.Texture, o.Size, o.Shape); why != "" {
			return why
		}
	}
	for i, a := range sp.Objects {
		for _, b := range sp.Objects[i+1:] {
			if a.Shape != "" && b.Shape != "" && HeldOutPair(a.Shape, b.Shape) {
				return fmt.Sprintf("%s with %s", a.Shape, b.Shape)
			}
		}
	}
	for _, r := range sp.Relations {
		if r.A < 0 || r.B < 0 || r.A >= len(sp.Objects) || r.B >= len(sp.Objects) {
			continue
		}
		a, b := sp.Objects[r.A].Shape, sp.Objects[r.B].Shape
		if a != "" && b != "" && HeldOutTriple(a, r.Rel, b) {
			return Triple{a, r.Rel, b}.String()
		}
	}
	return ""
}

// HeldOutSpec reports whether the spec explicitly asks for a held-out combination.
func HeldOutSpec(sp scene.Spec) bool { return SpecHeldOut(sp) != "" }
