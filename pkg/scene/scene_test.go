package scene

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestTemplatesDistinct(t *testing.T) {
	for _, cell := range []int{8, 12, 16} {
		seen := map[string]string{}
		for _, sh := range Shapes {
			for _, sz := range Sizes {
				for _, tx := range Textures {
					key := fmt.Sprint(Template(cell, sh, sz, tx))
					name := fmt.Sprint(sh, sz, tx)
					if prev, dup := seen[key]; dup {
						t.Fatalf("cell %d: %s renders like %s", cell, name, prev)
					}
					seen[key] = name
				}
			}
		}
	}
}

func TestRenderDeterministicAndValidated(t *testing.T) {
	c := DefaultConfig()
	sc := Scene{Objects: []Object{{Circle, Red, Large, Striped, 0, 1}, {Square, Blue, Small, Outline, 2, 3}}}
	a, err := Render(c, sc)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Render(c, sc)
	if string(a.Pix) != string(b.Pix) {
		t.Fatal("render not deterministic")
	}
	if a.Bounds().Dx() != 32 {
		t.Fatalf("size %d", a.Bounds().Dx())
	}
	bad := Scene{Objects: []Object{{Circle, "pink", Large, Solid, 0, 0}}}
	if _, err := Render(c, bad); err == nil {
		t.Fatal("pink accepted")
	}
	clash := Scene{Objects: []Object{{Circle, Red, Large, Solid, 0, 0}, {Square, Red, Large, Solid, 0, 0}}}
	if _, err := Render(c, clash); err == nil {
		t.Fatal("two objects in one cell accepted")
	}
}

func TestSpecSampleAndAssign(t *testing.T) {
	c := DefaultConfig()
	spec := Spec{
		Objects:   []ObjSpec{{Shape: Circle, Colour: Red, Count: 1}, {Shape: Square, Count: 1}},
		Relations: []RelSpec{{A: 0, B: 1, Rel: LeftOf}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		sc, err := spec.Sample(c, rng)
		if err != nil {
			t.Fatal(err)
		}
		if !spec.Satisfied(sc) {
			t.Fatalf("sample %d does not satisfy its spec: %v", i, sc)
		}
		// Swapping positions breaks the relation.
		sw := Scene{Objects: append([]Object(nil), sc.Objects...)}
		sw.Objects[0].Row, sw.Objects[1].Row = sw.Objects[1].Row, sw.Objects[0].Row
		sw.Objects[0].Col, sw.Objects[1].Col = sw.Objects[1].Col, sw.Objects[0].Col
		if spec.Satisfied(sw) && sw.Objects[0].Shape != Square {
			t.Fatalf("swapped scene still satisfies: %v", sw)
		}
		extra := Scene{Objects: append(append([]Object(nil), sc.Objects...), Object{Triangle, Green, Small, Solid, 3, 3})}
		if extra.Validate(c) == nil && spec.Satisfied(extra) {
			t.Fatal("extra object accepted")
		}
	}
	if err := (Spec{Objects: []ObjSpec{{Count: 2}}, Relations: []RelSpec{{0, 0, Above}}}).Validate(); err == nil {
		t.Fatal("relation on a count-2 group accepted")
	}
}

func TestRelationConverse(t *testing.T) {
	a, b := Object{Row: 1, Col: 0}, Object{Row: 1, Col: 3}
	for _, r := range append(append([]Relation(nil), SpatialRelations...), NonSpatialRelations...) {
		for _, p := range [][2]Object{{a, b}, {b, a}, {a, Object{Row: 0, Col: 0}}, {a, Object{Row: 3, Col: 0}}} {
			if r.Holds(p[0], p[1]) != r.Converse().Holds(p[1], p[0]) {
				t.Fatalf("%s converse %s disagrees on %v", r, r.Converse(), p)
			}
		}
	}
}
