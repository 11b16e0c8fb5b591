// Package scene is the compositional scene world that BiCoT-GRPO learns on when no real
// text-to-image weights are available: 1-4 objects on a white canvas, each with a shape, colour,
// size and texture, placed in the cells of a square grid.
//
// Objects are aligned to the grid (one object per cell, never crossing a cell edge). That keeps
// every scene exactly representable by a VQ codebook over cell-aligned patches and lets the oracle
// parse images cell by cell without ambiguity, while the prompts, plans, relations and counts stay
// as compositional as the reference benchmarks (T2I-CompBench, GenEval, WISE) need.
//
// The package holds the vocabulary of the world (attrs.go), scenes and their rendering
// (scene.go, render.go) and the constraint language prompts are checked against (spec.go).
package scene

import "fmt"

// Shape of an object.
type Shape string

// Colour of an object. JSON and prompts use the American spelling "color" for field names, as the
// reference data does.
type Colour string

// Size of an object relative to its cell.
type Size string

// Texture is how an object's area is filled.
type Texture string

// The world's vocabulary. The order of each list is part of the format: it fixes template and
// codebook ordering, so append only.
const (
	Circle   Shape = "circle"
	Square   Shape = "square"
	Triangle Shape = "triangle"
	Diamond  Shape = "diamond"
	Cross    Shape = "cross"

	Red    Colour = "red"
	Green  Colour = "green"
	Blue   Colour = "blue"
	Yellow Colour = "yellow"
	Purple Colour = "purple"
	Orange Colour = "orange"

	Small Size = "small"
	Large Size = "large"

	Solid   Texture = "solid"
	Striped Texture = "striped"
	Dotted  Texture = "dotted"
	Outline Texture = "outline"
)

// Shapes, Colours, Sizes and Textures list every value of each attribute in canonical order.
var (
	Shapes   = []Shape{Circle, Square, Triangle, Diamond, Cross}
	Colours  = []Colour{Red, Green, Blue, Yellow, Purple, Orange}
	Sizes    = []Size{Small, Large}
	Textures = []Texture{Solid, Striped, Dotted, Outline}
)

// RGB is a colour value on the canvas.
type RGB struct{ R, G, B uint8 }

// Background is the canvas colour.
var Background = RGB{255, 255, 255}

// palette holds each colour's base value; the shade used for stripes and dots is derived from it.
var palette = map[Colour]RGB{
	Red:    {220, 30, 30},
	Green:  {30, 170, 50},
	Blue:   {30, 70, 220},
	Yellow: {235, 200, 20},
	Purple: {140, 40, 180},
	Orange: {245, 130, 20},
}

// Base returns the colour's main canvas value.
func (c Colour) Base() RGB { return palette[c] }

// Shade returns the darker value drawn for stripes and dots.
func (c Colour) Shade() RGB {
	b := palette[c]
	return RGB{b.R / 2, b.G / 2, b.B / 2}
}

// Valid reports whether s is one of Shapes.
func (s Shape) Valid() bool { return contains(Shapes, s) }

// Valid reports whether c is one of Colours.
func (c Colour) Valid() bool { return contains(Colours, c) }

// Valid reports whether s is one of Sizes.
func (s Size) Valid() bool { return contains(Sizes, s) }

// Valid reports whether t is one of Textures.
func (t Texture) Valid() bool { return contains(Textures, t) }

func contains[T comparable](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// Index returns the position of v in list, or -1.
func Index[T comparable](list []T, v T) int {
	for i, x := range list {
		if x == v {
			return i
		}
	}
	return -1
}

// Relation between two objects. Spatial ones compare grid positions; non-spatial ones compare
// distances.
type Relation string

// Relations of the world. Locality strings are the reference data's where they exist.
const (
	LeftOf  Relation = "left of"
	RightOf Relation = "right of"
	Above   Relation = "above"
	Below   Relation = "below"
	NextTo  Relation = "next to"
	FarFrom Relation = "far from"
)

// SpatialRelations are the task_type "spatial" relations; NonSpatialRelations the "non" ones.
var (
	SpatialRelations    = []Relation{LeftOf, RightOf, Above, Below}
	NonSpatialRelations = []Relation{NextTo, FarFrom}
)

// ParseRelation maps a reference locality string (including its synonyms such as "on the top of")
// to a Relation.
func ParseRelation(s string) (Relation, error) {
	switch s {
	case "left of", "on the left of", "to the left of":
		return LeftOf, nil
	case "right of", "on the right of", "to the right of":
		return RightOf, nil
	case "above", "on top of", "on the top of":
		return Above, nil
	case "below", "on the bottom of", "under", "beneath":
		return Below, nil
	case "next to", "near", "on side of", "beside":
		return NextTo, nil
	case "far from", "away from":
		return FarFrom, nil
	}
	return "", fmt.Errorf("unknown relation %q", s)
}

// Holds reports whether the relation holds from a to b. Spatial relations need the offset along
// their axis to dominate the other axis (as T2I-CompBench's spatial check does), so a diagonal
// placement is neither "left of" nor "above". "next to" is 4-neighbourhood; "far from" means at
// least two cells apart along some axis.
func (r Relation) Holds(a, b Object) bool {
	dr, dc := a.Row-b.Row, a.Col-b.Col
	switch r {
	case LeftOf:
		return dc < 0 && abs(dc) > abs(dr)
	case RightOf:
		return dc > 0 && abs(dc) > abs(dr)
	case Above:
		return dr < 0 && abs(dr) > abs(dc)
	case Below:
		return dr > 0 && abs(dr) > abs(dc)
	case NextTo:
		return abs(dr)+abs(dc) == 1
	case FarFrom:
		return max(abs(dr), abs(dc)) >= 2
	}
	return false
}

// Converse returns the relation r' with r.Holds(a, b) == r'.Holds(b, a): left/right and
// above/below swap, next to and far from are symmetric.
func (r Relation) Converse() Relation {
	switch r {
	case LeftOf:
		return RightOf
	case RightOf:
		return LeftOf
	case Above:
		return Below
	case Below:
		return Above
	}
	return r
}

// Valid reports whether r is a known relation.
func (r Relation) Valid() bool {
	return contains(SpatialRelations, r) || contains(NonSpatialRelations, r)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
