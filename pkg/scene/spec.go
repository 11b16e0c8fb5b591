package scene

import (
	"errors"
	"fmt"
	"math/rand/v2"
)

// ObjSpec asks for Count objects with the given attributes; an empty attribute is unconstrained.
type ObjSpec struct {
	Shape   Shape   `json:"shape,omitempty"`
	Colour  Colour  `json:"color,omitempty"`
	Size    Size    `json:"size,omitempty"`
	Texture Texture `json:"texture,omitempty"`
	Count   int     `json:"count"`
}

// Matches reports whether obj has every attribute the spec constrains.
func (o ObjSpec) Matches(obj Object) bool {
	return (o.Shape == "" || o.Shape == obj.Shape) &&
		(o.Colour == "" || o.Colour == obj.Colour) &&
		(o.Size == "" || o.Size == obj.Size) &&
		(o.Texture == "" || o.Texture == obj.Texture)
}

// RelSpec asks that relation Rel holds from object group A to object group B (indices into
// Spec.Objects, each with Count 1).
type RelSpec struct {
	A   int      `json:"a"`
	B   int      `json:"b"`
	Rel Relation `json:"rel"`
}

// Spec is what a prompt asks of an image, in the world's own terms. It is exact: an image satisfies
// it only when its objects are precisely the requested ones (no extra objects) and every relation
// holds. It travels with each prompt as the extension field "spec" of the reference JSONL format.
type Spec struct {
	Objects   []ObjSpec `json:"objects"`
	Relations []RelSpec `json:"relations,omitempty"`
}

// Total is the number of objects the spec asks for.
func (s Spec) Total() int {
	n := 0
	for _, o := range s.Objects {
		n += o.Count
	}
	return n
}

// Validate checks attribute values, counts and relation indices.
func (s Spec) Validate() error {
	if len(s.Objects) == 0 {
		return errors.New("spec: no objects")
	}
	for i, o := range s.Objects {
		switch {
		case o.Count < 1:
			return fmt.Errorf("spec object %d: count %d < 1", i, o.Count)
		case o.Shape != "" && !o.Shape.Valid():
			return fmt.Errorf("spec object %d: unknown shape %q", i, o.Shape)
		case o.Colour != "" && !o.Colour.Valid():
			return fmt.Errorf("spec object %d: unknown color %q", i, o.Colour)
		case o.Size != "" && !o.Size.Valid():
			return fmt.Errorf("spec object %d: unknown size %q", i, o.Size)
		case o.Texture != "" && !o.Texture.Valid():
			return fmt.Errorf("spec object %d: unknown texture %q", i, o.Texture)
		}
	}
	if t := s.Total(); t > MaxObjects {
		return fmt.Errorf("spec: %d objects, at most %d", t, MaxObjects)
	}
	for i, r := range s.Relations {
		if !r.Rel.Valid() {
			return fmt.Errorf("spec relation %d: unknown relation %q", i, r.Rel)
		}
		for _, k := range []int{r.A, r.B} {
			if k < 0 || k >= len(s.Objects) {
				return fmt.Errorf("spec relation %d: object index %d out of range", i, k)
			}
			if s.Objects[k].Count != 1 {
				return fmt.Errorf("spec relation %d: object %d has count %d, relations need count 1", i, k, s.Objects[k].Count)
			}
		}
		if r.A == r.B {
			return fmt.Errorf("spec relation %d: relates object %d to itself", i, r.A)
		}
	}
	return nil
}

// Assign finds, for each scene object, the spec object group it fills, such that every group gets
// exactly Count objects and every relation holds. ok is false when no such assignment exists,
// which is also the case whenever the scene has extra or missing objects.
func (s Spec) Assign(sc Scene) (groups []int, ok bool) {
	if len(sc.Objects) != s.Total() {
		return nil, false
	}
	left := make([]int, len(s.Objects))
	for i, o := range s.Objects {
		left[i] = o.Count
	}
	groups = make([]int, len(sc.Objects))
	var try func(k int) bool
	try = func(k int) bool {
		if k == len(sc.Objects) {
			return s.relationsHold(sc, groups)
		}
		for g, o := range s.Objects {
			if left[g] == 0 || !o.Matches(sc.Objects[k]) {
				continue
			}
			left[g]--
			groups[k] = g
			if try(k + 1) {
				return true
			}
			left[g]++
		}
		return false
	}
	if !try(0) {
		return nil, false
	}
	return groups, true
}

// Satisfied reports whether the scene is exactly what the spec asks for.
func (s Spec) Satisfied(sc Scene) bool {
	_, ok := s.Assign(sc)
	return ok
}

func (s Spec) relationsHold(sc Scene, groups []int) bool {
	for _, r := range s.Relations {
		a, b := -1, -1
		for k, g := range groups {
			if g == r.A {
				a = k
			}
			if g == r.B {
				b = k
			}
		}
		if a < 0 || b < 0 || !r.Rel.Holds(sc.Objects[a], sc.Objects[b]) {
			return false
		}
	}
	return true
}

// Sample draws a scene that satisfies the spec: unconstrained attributes and cells are drawn from
// rng, and layouts are redrawn until every relation holds. It fails only for specs whose relations
// cannot be met on the grid.
func (s Spec) Sample(c Config, rng *rand.Rand) (Scene, error) {
	if err := s.Validate(); err != nil {
		return Scene{}, err
	}
	var objs []Object
	for _, o := range s.Objects {
		for range o.Count {
			objs = append(objs, Object{
				Shape:   pick(o.Shape, Shapes, rng),
				Colour:  pick(o.Colour, Colours, rng),
				Size:    pick(o.Size, Sizes, rng),
				Texture: pick(o.Texture, Textures, rng),
			})
		}
	}
	for range 1000 {
		cells := rng.Perm(c.Cells())
		for i := range objs {
			objs[i].Row, objs[i].Col = cells[i]/c.Grid, cells[i]%c.Grid
		}
		sc := Scene{Objects: append([]Object(nil), objs...)}
		if s.Satisfied(sc) {
			return sc, nil
		}
	}
	return Scene{}, fmt.Errorf("spec: no layout on a %dx%d grid satisfies the relations", c.Grid, c.Grid)
}

func pick[T comparable](fixed T, all []T, rng *rand.Rand) T {
	var zero T
	if fixed != zero {
		return fixed
	}
	return all[rng.IntN(len(all))]
}
