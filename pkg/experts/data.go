package experts

import (
	"fmt"
	"image"
	"image/color"
	"math/rand/v2"

	"github.com/bicot-rl/bicot/pkg/promptgen"
	"github.com/bicot-rl/bicot/pkg/prompts"
	"github.com/bicot-rl/bicot/pkg/scene"
)

// Training and evaluation data: rendered scenes, prompts with their exact spec, and two kinds of
// bad images, degraded renders (the right scene drawn badly) and misaligned renders (a clean
// drawing of a scene the prompt does not describe).

var sceneCfg = scene.DefaultConfig()

// taskTypes are the prompt kinds the experts see in training and evaluation.
var taskTypes = prompts.TaskTypes

// drawPrompt draws a prompt of a random task type.
func drawPrompt(rng *rand.Rand) (prompts.Prompt, error) {
	tt := taskTypes[rng.IntN(len(taskTypes))]
	p, err := promptgen.Generate(tt, rng)
	if err != nil {
		return p, fmt.Errorf("draw %s prompt: %w", tt, err)
	}
	if p.Spec == nil {
		return p, fmt.Errorf("draw %s prompt: no spec", tt)
	}
	return p, nil
}

// randomScene draws 1-4 objects with random attributes in distinct cells.
func randomScene(rng *rand.Rand) scene.Scene {
	n := 1 + rng.IntN(scene.MaxObjects)
	cells := rng.Perm(sceneCfg.Cells())
	sc := scene.Scene{Objects: make([]scene.Object, n)}
	for i := range sc.Objects {
		sc.Objects[i] = scene.Object{
			Shape:   scene.Shapes[rng.IntN(len(scene.Shapes))],
			Colour:  scene.Colours[rng.IntN(len(scene.Colours))],
			Size:    scene.Sizes[rng.IntN(len(scene.Sizes))],
			Texture: scene.Textures[rng.IntN(len(scene.Textures))],
			Row:     cells[i] / sceneCfg.Grid,
			Col:     cells[i] % sceneCfg.Grid,
		}
	}
	return sc
}

func render(sc scene.Scene) (*image.RGBA, error) {
	img, err := scene.Render(sceneCfg, sc)
	if err != nil {
		return nil, fmt.Errorf("render %v: %w", sc.Objects, err)
	}
	return img, nil
}

// Degradation kinds.
const (
	degNoise = iota
	degBlur
	degShift
	degSpeckle
	degTint
	degScramble
	numDegradations
)

// degrade returns a damaged copy of img: one or two of pixel noise, blur, a shift off the grid,
// speckles, a colour tint, or a scrambled cell. strength in (0, 1] scales how much.
func degrade(img *image.RGBA, rng *rand.Rand, strength float64) *image.RGBA {
	return degradeWith(img, rng, strength, true)
}

func degradeWith(img *image.RGBA, rng *rand.Rand, strength float64, allowShift bool) *image.RGBA {
	out := image.NewRGBA(img.Bounds())
	copy(out.Pix, img.Pix)
	k := 1 + rng.IntN(2)
	for range k {
		kind := rng.IntN(numDegradations)
		if kind == degShift && !allowShift {
			kind = degNoise
		}
		switch kind {
		case degNoise:
			sigma := strength * (20 + 50*rng.Float64())
			for i := range out.Pix {
				if i%4 == 3 {
					continue
				}
				out.Pix[i] = clamp8(float64(out.Pix[i]) + sigma*rng.NormFloat64())
			}
		case degBlur:
			out = blur(out)
		case degShift:
			d := 1 + int(strength*3*rng.Float64())
			dx, dy := 0, 0
			if rng.IntN(2) == 0 {
				dx = d * (2*rng.IntN(2) - 1)
			} else {
				dy = d * (2*rng.IntN(2) - 1)
			}
			out = shift(out, dx, dy)
		case degSpeckle:
			n := int(strength * float64(20+rng.IntN(60)))
			for range n {
				x, y := rng.IntN(ImageSide), rng.IntN(ImageSide)
				out.SetRGBA(x, y, color.RGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255})
			}
		case degTint:
			var m [3]float64
			for c := range m {
				m[c] = 1 + strength*0.6*(rng.Float64()-0.5)
			}
			for i := range out.Pix {
				if i%4 != 3 {
					out.Pix[i] = clamp8(float64(out.Pix[i]) * m[i%4])
				}
			}
		case degScramble:
			cx, cy := rng.IntN(Grid), rng.IntN(Grid)
			pix := make([]color.RGBA, 0, CellSize*CellSize)
			for y := range CellSize {
				for x := range CellSize {
					pix = append(pix, out.RGBAAt(cx*CellSize+x, cy*CellSize+y))
				}
			}
			rng.Shuffle(len(pix), func(i, j int) { pix[i], pix[j] = pix[j], pix[i] })
			for y := range CellSize {
				for x := range CellSize {
					out.SetRGBA(cx*CellSize+x, cy*CellSize+y, pix[y*CellSize+x])
				}
			}
		}
	}
	return out
}

func clamp8(v float64) uint8 {
	switch {
	case v < 0:
		return 0
	case v > 255:
		return 255
	}
	return uint8(v + 0.5)
}

func blur(img *image.RGBA) *image.RGBA {
	b := img.Bounds()
	out := image.NewRGBA(b)
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			var s [3]int
			n := 0
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					xx, yy := x+dx, y+dy
					if xx < 0 || yy < 0 || xx >= b.Dx() || yy >= b.Dy() {
						continue
					}
					c := img.RGBAAt(xx, yy)
					s[0] += int(c.R)
					s[1] += int(c.G)
					s[2] += int(c.B)
					n++
				}
			}
			out.SetRGBA(x, y, color.RGBA{uint8(s[0] / n), uint8(s[1] / n), uint8(s[2] / n), 255})
		}
	}
	return out
}

func shift(img *image.RGBA, dx, dy int) *image.RGBA {
	b := img.Bounds()
	out := image.NewRGBA(b)
	for i := range out.Pix {
		out.Pix[i] = 255
	}
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			xx, yy := x+dx, y+dy
			if xx >= 0 && yy >= 0 && xx < b.Dx() && yy < b.Dy() {
				out.SetRGBA(xx, yy, img.RGBAAt(x, y))
			}
		}
	}
	return out
}

// mutateSpec changes one thing about a spec: an attribute of one object group, a count, a missing
// or an extra object, or the relation turned around. The result may be invalid; callers check.
func mutateSpec(sp scene.Spec, rng *rand.Rand) scene.Spec {
	out := scene.Spec{Objects: append([]scene.ObjSpec(nil), sp.Objects...), Relations: append([]scene.RelSpec(nil), sp.Relations...)}
	g := rng.IntN(len(out.Objects))
	switch rng.IntN(6) {
	case 0:
		out.Objects[g].Colour = other(out.Objects[g].Colour, scene.Colours, rng)
	case 1:
		out.Objects[g].Shape = other(out.Objects[g].Shape, scene.Shapes, rng)
	case 2:
		if rng.IntN(2) == 0 {
			out.Objects[g].Texture = other(out.Objects[g].Texture, scene.Textures, rng)
		} else {
			out.Objects[g].Size = other(out.Objects[g].Size, scene.Sizes, rng)
		}
	case 3: // one object more
		if related(out, g) || rng.IntN(2) == 0 {
			out.Objects = append(out.Objects, scene.ObjSpec{Shape: scene.Shapes[rng.IntN(len(scene.Shapes))], Count: 1})
		} else {
			out.Objects[g].Count++
		}
	case 4: // one object fewer
		if !related(out, g) && out.Objects[g].Count > 1 {
			out.Objects[g].Count--
		} else if len(out.Objects) > 1 {
			out = dropGroup(out, g)
		} else {
			out.Objects[g].Shape = other(out.Objects[g].Shape, scene.Shapes, rng)
		}
	case 5: // relation turned around, or attributes of another group changed
		if len(out.Relations) > 0 {
			r := rng.IntN(len(out.Relations))
			out.Relations[r].Rel = opposite(out.Relations[r].Rel)
		} else {
			out.Objects[g].Colour = other(out.Objects[g].Colour, scene.Colours, rng)
		}
	}
	return out
}

func other[T comparable](cur T, all []T, rng *rand.Rand) T {
	for {
		v := all[rng.IntN(len(all))]
		if v != cur {
			return v
		}
	}
}

func related(sp scene.Spec, g int) bool {
	for _, r := range sp.Relations {
		if r.A == g || r.B == g {
			return true
		}
	}
	return false
}

func dropGroup(sp scene.Spec, g int) scene.Spec {
	out := scene.Spec{}
	for i, o := range sp.Objects {
		if i != g {
			out.Objects = append(out.Objects, o)
		}
	}
	for _, r := range sp.Relations {
		if r.A == g || r.B == g {
			continue
		}
		if r.A > g {
			r.A--
		}
		if r.B > g {
			r.B--
		}
		out.Relations = append(out.Relations, r)
	}
	return out
}

func opposite(r scene.Relation) scene.Relation {
	switch r {
	case scene.NextTo:
		return scene.FarFrom
	case scene.FarFrom:
		return scene.NextTo
	}
	return r.Converse()
}

// faithfulScene samples a scene that satisfies the prompt's spec.
func faithfulScene(p prompts.Prompt, rng *rand.Rand) (scene.Scene, error) {
	sc, err := p.Spec.Sample(sceneCfg, rng)
	if err != nil {
		return sc, fmt.Errorf("sample %q: %w", p.Prompt, err)
	}
	return sc, nil
}

// misalignedScene samples a scene that does not satisfy the prompt's spec but differs from it in
// one respect, falling back to a random scene.
func misalignedScene(p prompts.Prompt, rng *rand.Rand) scene.Scene {
	for range 20 {
		m := mutateSpec(*p.Spec, rng)
		if m.Validate() != nil {
			continue
		}
		sc, err := m.Sample(sceneCfg, rng)
		if err == nil && !p.Spec.Satisfied(sc) {
			return sc
		}
	}
	for {
		sc := randomScene(rng)
		if !p.Spec.Satisfied(sc) {
			return sc
		}
	}
}

// question draws a VQA question about sc with its true answer: half the time a phrase naming one
// of the scene's objects (its shape and up to two more attributes), otherwise a phrase that names
// none of them, mostly one attribute away from an object.
func question(sc scene.Scene, rng *rand.Rand) (string, bool) {
	want := rng.IntN(2) == 0
	for range 50 {
		o := sc.Objects[rng.IntN(len(sc.Objects))]
		spec := scene.ObjSpec{Shape: o.Shape}
		for _, a := range rng.Perm(3)[:rng.IntN(3)] {
			switch a {
			case 0:
				spec.Colour = o.Colour
			case 1:
				spec.Texture = o.Texture
			case 2:
				spec.Size = o.Size
			}
		}
		if !want {
			switch rng.IntN(4) {
			case 0:
				spec.Shape = other(spec.Shape, scene.Shapes, rng)
			case 1:
				spec.Colour = other(spec.Colour, scene.Colours, rng)
			case 2:
				spec.Texture = other(spec.Texture, scene.Textures, rng)
			case 3:
				spec.Size = other(spec.Size, scene.Sizes, rng)
			}
		}
		has := false
		for _, obj := range sc.Objects {
			if spec.Matches(obj) {
				has = true
			}
		}
		if has == want {
			return phrase(spec) + "?", want
		}
	}
	o := sc.Objects[0]
	return string(o.Shape) + "?", true
}

// phrase writes an object spec as an attr_noun ("small striped red circle").
func phrase(o scene.ObjSpec) string {
	s := ""
	for _, w := range []string{string(o.Size), string(o.Texture), string(o.Colour)} {
		if w != "" {
			s += w + " "
		}
	}
	return s + string(o.Shape)
}
