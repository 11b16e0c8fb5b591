// Package oracle is the evaluation oracle of the scene world: an exact parser from pixels to objects
// and a scorer that checks the parsed scene against what a prompt asks (its scene.Spec), per task
// type, in the spirit of T2I-CompBench, GenEval and WISE.
//
// The oracle only ever looks at pixels, never at the scene that produced them, so it can judge
// images decoded from policy tokens. It is used for evaluation only, never as a training reward:
// "reward went up" is checked against "oracle score went up", which is how reward hacking shows.
//
// Parsing (parse.go) matches each grid cell against every object template in every colour and
// accepts the best match within a mismatch tolerance small enough that no two templates can be
// confused; anything else in a cell is an unknown object, which the scorer counts as an extra one.
// Scoring (score.go) is strict: 1 when the image is exactly what the spec asks for, otherwise at
// most PartialCredit, with a per-check breakdown for reports (report.go).
package oracle

import (
	"fmt"
	"image"
	"math"

	"github.com/bicot-rl/bicot/pkg/scene"
)

// Detection is one recognised object with its tight pixel box in image coordinates.
type Detection struct {
	scene.Object
	Box image.Rectangle `json:"box"`
	// Mismatches counts the cell's pixels that differ from the matched template (at most the
	// parser's tolerance).
	Mismatches int `json:"mismatches"`
}

// Cell is a grid position, row 0 at the top.
type Cell struct {
	Row int `json:"row"`
	Col int `json:"col"`
}

// Parsed is the content of an image as the oracle reads it.
type Parsed struct {
	// Objects are the recognised objects in raster order of their cells.
	Objects []Detection `json:"objects"`
	// Unknown lists cells that are neither background nor any object; each counts as one extra
	// object when scoring.
	Unknown []Cell `json:"unknown,omitempty"`
}

// Scene returns the recognised objects as a scene (unknown cells are left out).
func (p Parsed) Scene() scene.Scene {
	sc := scene.Scene{Objects: make([]scene.Object, len(p.Objects))}
	for i, d := range p.Objects {
		sc.Objects[i] = d.Object
	}
	return sc
}

// Count is the number of things in the image: recognised objects plus unknown cells.
func (p Parsed) Count() int { return len(p.Objects) + len(p.Unknown) }

// Pixel labels: background, the base colour i (1+i) or the shade of colour i (1+n+i); labelNone
// for a pixel near none of them.
const (
	labelNone = -1
	labelBG   = 0
)

// candidate is one thing a cell can show: a template in a colour.
type candidate struct {
	obj    scene.Object // Row and Col unset
	labels []int        // expected label per cell pixel, row-major
	box    image.Rectangle
}

// Parser reads images of one canvas configuration. It is immutable and safe for concurrent use.
type Parser struct {
	cfg        scene.Config
	candidates []candidate
	palette    []scene.RGB // indexed by label
	// pixTol2 is the squared RGB distance within which a pixel takes a palette label: half the
	// smallest distance between two palette values, so a label is never ambiguous.
	pixTol2 float64
	// tol is the number of mismatching pixels a cell may have and still match a candidate:
	// (d-1)/2 for the smallest pixel distance d between two candidates (background included), so at
	// most one candidate is ever within tolerance.
	tol int
}

// NewParser precomputes the templates of cfg in every colour.
func NewParser(cfg scene.Config) (*Parser, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("oracle: %w", err)
	}
	n := len(scene.Colours)
	palette := make([]scene.RGB, 1+2*n)
	palette[labelBG] = scene.Background
	for i, c := range scene.Colours {
		palette[1+i], palette[1+n+i] = c.Base(), c.Shade()
	}
	minD2 := math.Inf(1)
	for i := range palette {
		for j := i + 1; j < len(palette); j++ {
			minD2 = min(minD2, rgbDist2(palette[i], palette[j]))
		}
	}
	p := &Parser{cfg: cfg, palette: palette, pixTol2: minD2 / 4}
	bg := make([]int, cfg.Cell*cfg.Cell)
	all := [][]int{bg}
	for _, sh := range scene.Shapes {
		for _, sz := range scene.Sizes {
			for _, tx := range scene.Textures {
				t := scene.Template(cfg.Cell, sh, sz, tx)
				box := image.Rectangle{}
				for y, row := range t {
					for x, ink := range row {
						if ink != scene.InkNone {
							box = box.Union(image.Rect(x, y, x+1, y+1))
						}
					}
				}
				for ci, co := range scene.Colours {
					labels := make([]int, 0, cfg.Cell*cfg.Cell)
					for _, row := range t {
						for _, ink := range row {
							switch ink {
							case scene.InkBase:
								labels = append(labels, 1+ci)
							case scene.InkShade:
								labels = append(labels, 1+n+ci)
							default:
								labels = append(labels, labelBG)
							}
						}
					}
					p.candidates = append(p.candidates, candidate{
						obj:    scene.Object{Shape: sh, Colour: co, Size: sz, Texture: tx},
						labels: labels, box: box,
					})
					all = append(all, labels)
				}
			}
		}
	}
	minDist := len(bg)
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			d := 0
			for k := range all[i] {
				if all[i][k] != all[j][k] {
					d++
				}
			}
			minDist = min(minDist, d)
		}
	}
	if minDist == 0 {
		return nil, fmt.Errorf("oracle: two templates render identically at cell %d", cfg.Cell)
	}
	p.tol = (minDist - 1) / 2
	return p, nil
}

func rgbDist2(a, b scene.RGB) float64 {
	dr, dg, db := float64(a.R)-float64(b.R), float64(a.G)-float64(b.G), float64(a.B)-float64(b.B)
	return dr*dr + dg*dg + db*db
}

// Config is the canvas the parser reads.
func (p *Parser) Config() scene.Config { return p.cfg }

// Tolerance is the number of mismatching pixels a cell may have and still be recognised.
func (p *Parser) Tolerance() int { return p.tol }

// Parse reads every grid cell of img. Any image of the right size parses; only a nil image or a
// wrong size is an error.
func (p *Parser) Parse(img image.Image) (Parsed, error) {
	if img == nil {
		return Parsed{}, fmt.Errorf("oracle parse: nil image")
	}
	b := img.Bounds()
	n := p.cfg.ImageSize()
	if b.Dx() != n || b.Dy() != n {
		return Parsed{}, fmt.Errorf("oracle parse: image is %dx%d, want %dx%d for grid %d cell %d",
			b.Dx(), b.Dy(), n, n, p.cfg.Grid, p.cfg.Cell)
	}
	rgba := scene.ToRGBA(img)
	rb := rgba.Bounds()
	cell := p.cfg.Cell
	labels := make([]int, cell*cell)
	var out Parsed
	for row := range p.cfg.Grid {
		for col := range p.cfg.Grid {
			for y := range cell {
				off := rgba.PixOffset(rb.Min.X+col*cell, rb.Min.Y+row*cell+y)
				for x := range cell {
					px := rgba.Pix[off+4*x : off+4*x+3 : off+4*x+3]
					labels[y*cell+x] = p.label(scene.RGB{R: px[0], G: px[1], B: px[2]})
				}
			}
			if mismatches(labels, nil, p.tol) <= p.tol {
				continue
			}
			best, bestMis := -1, p.tol+1
			for i := range p.candidates {
				if m := mismatches(labels, p.candidates[i].labels, bestMis-1); m < bestMis {
					best, bestMis = i, m
				}
			}
			if best < 0 {
				out.Unknown = append(out.Unknown, Cell{Row: row, Col: col})
				continue
			}
			c := p.candidates[best]
			o := c.obj
			o.Row, o.Col = row, col
			out.Objects = append(out.Objects, Detection{
				Object:     o,
				Box:        c.box.Add(image.Pt(col*cell, row*cell)),
				Mismatches: bestMis,
			})
		}
	}
	return out, nil
}

// label is the palette entry within tolerance of v, or labelNone.
func (p *Parser) label(v scene.RGB) int {
	for i, q := range p.palette {
		if rgbDist2(v, q) <= p.pixTol2 {
			return i
		}
	}
	return labelNone
}

// mismatches counts pixels whose label differs from want (nil: all background), stopping once the
// count exceeds limit.
func mismatches(got, want []int, limit int) int {
	m := 0
	for i, g := range got {
		w := labelBG
		if want != nil {
			w = want[i]
		}
		if g != w {
			m++
			if m > limit {
				return m
			}
		}
	}
	return m
}

// Parse reads img with a parser for cfg. Callers parsing many images should keep a Parser.
func Parse(cfg scene.Config, img image.Image) (Parsed, error) {
	p, err := NewParser(cfg)
	if err != nil {
		return Parsed{}, err
	}
	return p.Parse(img)
}
